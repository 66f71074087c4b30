"""From head outputs to a fixed number of detections per image, under jit.

Score of an (anchor, class) pair: ``sqrt(sigmoid(cls) * sigmoid(iou))``, as the
official OTA inference. Per image: the ``pre_nms_topk`` best pairs (the official
code takes its top 1000 per level; one top-k over all levels keeps the shapes
simpler), a score threshold, class-aware greedy NMS, at most ``max_detections``
kept. Every shape is static; padding slots are flagged by ``valid``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ota_jax.boxes import elementwise_iou
from ota_jax.detector.model import FCOSOutput

__all__ = ["Detections", "PostprocessConfig", "detection_scores", "nms", "postprocess"]


@dataclasses.dataclass(frozen=True)
class PostprocessConfig:
    """Static inference settings (official OTA test config).

    Attributes:
      score_threshold: candidates must score above this (0.05).
      pre_nms_topk: candidate (anchor, class) pairs per image entering NMS (1000).
      nms_iou_threshold: a box is suppressed by a higher-scoring box of the same
        class when their IoU exceeds this (0.6).
      max_detections: detections per image, the static output size K (100).
    """

    score_threshold: float = 0.05
    pre_nms_topk: int = 1000
    nms_iou_threshold: float = 0.6
    max_detections: int = 100


class Detections(NamedTuple):
    """Fixed-size detections; slots with ``valid == False`` are padding.

    Attributes:
      boxes: ``[B, K, 4]`` float32 xyxy pixels (0 in padding).
      scores: ``[B, K]`` float32, descending within an image (0 in padding).
      classes: ``[B, K]`` int32 (-1 in padding).
      valid: ``[B, K]`` bool.
    """

    boxes: Array
    scores: Array
    classes: Array
    valid: Array


def detection_scores(cls_logits: Array, iou_logits: Array) -> Array:
    """``sqrt(sigmoid(cls) * sigmoid(iou))``: ``[..., A, C]`` from class logits
    ``[..., A, C]`` and IoU logits ``[..., A]``."""
    probs = jax.nn.sigmoid(cls_logits.astype(jnp.float32))
    quality = jax.nn.sigmoid(iou_logits.astype(jnp.float32))[..., None]
    return jnp.sqrt(probs * quality)


def nms(
    boxes: Array,
    scores: Array,
    *,
    iou_threshold: float,
    max_outputs: int,
    valid: Array | None = None,
    classes: Array | None = None,
) -> tuple[Array, Array]:
    """Greedy non-maximum suppression of one image, static shapes.

    No maintained JAX NMS exists among our dependencies (jax, flax, optax and
    ott-jax have none; the TF and torchvision ones would break layer 2's
    no-TensorFlow rule and jit), so this is the plain greedy algorithm as a
    bounded loop: visit candidates by descending score; keep one unless a kept
    box suppressed it; a kept box suppresses every later candidate (of the same
    class, when ``classes`` is given) with IoU above the threshold. Each step
    costs one ``[N]`` IoU row, so memory is ``O(N)``, and the loop stops early
    once ``max_outputs`` boxes are kept or the valid candidates run out.

    Args:
      boxes: ``[N, 4]`` xyxy boxes.
      scores: ``[N]`` scores.
      iou_threshold: suppress when IoU with a kept box is strictly greater.
      max_outputs: static number of output slots K.
      valid: optional ``[N]`` bool, candidates allowed at all.
      classes: optional ``[N]`` int; boxes of different classes never suppress
        each other (torchvision's ``batched_nms``).

    Returns:
      ``indices [K]`` int32 into the inputs, kept boxes by descending score
      (ties by index), and ``kept [K]`` bool marking the filled slots (unfilled
      slots hold index 0).
    """
    num = boxes.shape[0]
    boxes = boxes.astype(jnp.float32)
    valid = jnp.ones((num,), bool) if valid is None else valid.astype(bool)
    valid = valid & jnp.isfinite(scores)
    order = jnp.argsort(jnp.where(valid, -scores, jnp.inf), stable=True)
    sorted_boxes = boxes[order]
    sorted_classes = None if classes is None else classes[order]
    num_valid = valid.sum(dtype=jnp.int32)
    positions = jnp.arange(num)

    def cond(carry):
        i, num_kept, _, _ = carry
        return (i < num_valid) & (num_kept < max_outputs)

    def body(carry):
        i, num_kept, suppressed, out = carry
        keep = ~suppressed[i]
        overlaps = elementwise_iou(sorted_boxes[i], sorted_boxes) > iou_threshold
        if sorted_classes is not None:
            overlaps &= sorted_classes == sorted_classes[i]
        suppressed = suppressed | (keep & overlaps & (positions > i))
        out = jnp.where(keep, out.at[num_kept].set(order[i]), out)
        return i + 1, num_kept + keep.astype(jnp.int32), suppressed, out

    init = (
        jnp.int32(0),
        jnp.int32(0),
        jnp.zeros((num,), bool),
        jnp.zeros((max_outputs,), jnp.int32),
    )
    if num == 0:
        return init[3], jnp.zeros((max_outputs,), bool)
    _, num_kept, _, indices = jax.lax.while_loop(cond, body, init)
    return indices, jnp.arange(max_outputs) < num_kept


def _postprocess_one(
    cls_logits: Array,
    iou_logits: Array,
    pred_boxes: Array,
    config: PostprocessConfig,
    image_size: tuple[int, int] | None,
) -> Detections:
    num_anchors, num_classes = cls_logits.shape
    scores = detection_scores(cls_logits, iou_logits).reshape(-1)
    k = min(config.pre_nms_topk, num_anchors * num_classes)
    top_scores, top_index = jax.lax.top_k(scores, k)
    anchor = top_index // num_classes
    classes = (top_index % num_classes).astype(jnp.int32)
    boxes = pred_boxes[anchor].astype(jnp.float32)
    candidate = (top_scores > config.score_threshold) & jnp.all(jnp.isfinite(boxes), axis=-1)
    keep, kept = nms(
        boxes,
        top_scores,
        iou_threshold=config.nms_iou_threshold,
        max_outputs=config.max_detections,
        valid=candidate,
        classes=classes,
    )
    out_boxes = boxes[keep]
    if image_size is not None:
        height, width = image_size
        out_boxes = jnp.clip(out_boxes, 0.0, jnp.array([width, height, width, height], jnp.float32))
    return Detections(
        boxes=jnp.where(kept[:, None], out_boxes, 0.0),
        scores=jnp.where(kept, top_scores[keep], 0.0),
        classes=jnp.where(kept, classes[keep], -1),
        valid=kept,
    )


def postprocess(
    outputs: FCOSOutput,
    *,
    config: PostprocessConfig = PostprocessConfig(),
    image_size: tuple[int, int] | None = None,
) -> Detections:
    """Batched detections from model outputs.

    Args:
      outputs: `FCOSOutput` with ``cls_logits [B, A, C]``, ``iou_logits [B, A]``,
        ``pred_boxes [B, A, 4]``.
      config: a `PostprocessConfig` (static).
      image_size: optional static ``(H, W)``: kept boxes are clipped to the image
        (after NMS, as detectron2/cvpods do).

    Returns:
      `Detections` with ``K = config.max_detections``.
    """
    per_image = lambda c, i, b: _postprocess_one(c, i, b, config, image_size)
    return jax.vmap(per_image)(outputs.cls_logits, outputs.iou_logits, outputs.pred_boxes)
