"""ATSS label assignment (Zhang et al. 2020), as mmdetection's ``ATSSAssigner``.

Each anchor point carries one square anchor box of side ``anchor_scale * stride``.
For each gt:

1. Candidates: on every level (distinct stride), the ``topk`` anchors whose points
   are nearest (Euclidean) to the gt centre, all of a level with fewer anchors;
   equal distances take the lower anchor index first.
2. Threshold: mean + standard deviation of the candidates' anchor-box IoUs with the
   gt, the deviation unbiased (``ddof=1``, torch's default used by mmdet). A gt with
   a single candidate has no threshold (torch's NaN) and no positive.
3. Positives: candidates with IoU >= threshold whose point lies inside the gt box,
   all four distances > 0.01.

An anchor positive for several gts takes the one of highest IoU (the first gt on
equal IoUs). Predictions play no part. ``dynamic_k`` is the number of anchors each
gt won; ``ignore_mask`` is all False.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ota_jax._src import buckets
from ota_jax._src.config import assigner_config
from ota_jax._src.inputs import (
    AssignArgs,
    make_assignment,
    prepare_inputs,
    vmap_images,
)
from ota_jax._src.public import assign_batch, assign_one_image
from ota_jax.anchors import anchor_boxes
from ota_jax.assignment import Assignment
from ota_jax.baselines.levels import smallest_per_level
from ota_jax.boxes import pairwise_iou
from ota_jax.priors import inside_boxes

__all__ = ["ATSSConfig", "atss_assign", "atss_assign_batch"]

# mmdet's fixed margin: a positive's point lies more than this inside the gt box (pixels).
INSIDE_MARGIN = 0.01


@assigner_config
class ATSSConfig:
    """ATSS hyperparameters; the defaults are mmdetection's.

    Attributes:
      topk: candidates per level and gt, the anchors nearest the gt centre.
      anchor_scale: side of each anchor box, in strides (mmdet's octave base scale 8).
      max_levels: levels (distinct strides) searched with one ``top_k`` each; more
        levels fall back to one sort over all anchors, same result, slower.
      sizes: the static sizes it runs at: ``"auto"``, ``"cpu"``, ``"accelerator"``,
        ``"off"`` (one program at the padded size) or a `ota_jax.Sizes` (see
        `ota_jax.resolve_sizes`).
    """

    topk: int = 9
    anchor_scale: float = 8.0
    max_levels: int = 8
    sizes: str | buckets.Sizes = "auto"

    def __post_init__(self):
        if self.topk < 1:
            raise ValueError(f"topk must be at least 1, got {self.topk}")
        if not self.anchor_scale > 0:
            raise ValueError(f"anchor_scale must be positive, got {self.anchor_scale}")
        if self.max_levels < 1:
            raise ValueError(f"max_levels must be at least 1, got {self.max_levels}")


def _atss_one_image(
    pred_boxes,
    cls_logits,
    points,
    strides,
    gt_boxes,
    gt_labels,
    gt_mask,
    obj_logits,
    config: ATSSConfig,
) -> Assignment:
    inputs = prepare_inputs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    points, strides, boxes, gt_mask = inputs.points, inputs.strides, inputs.gt_boxes, inputs.gt_mask
    ious = pairwise_iou(boxes, anchor_boxes(points, strides, scale=config.anchor_scale))

    # 1. Candidates: each level's topk points nearest the gt centre.
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    distances = jnp.sqrt(((points[None, :, :] - centres[:, None, :]) ** 2).sum(axis=-1))
    nearest = smallest_per_level(distances, strides, config.topk, max_levels=config.max_levels)
    candidate = nearest & gt_mask[:, None]

    # 2. Threshold: mean + unbiased std of the candidates' IoUs, per gt.
    count = candidate.sum(axis=1)
    mean = jnp.where(candidate, ious, 0.0).sum(axis=1) / jnp.maximum(count, 1)
    squares = jnp.where(candidate, (ious - mean[:, None]) ** 2, 0.0).sum(axis=1)
    std = jnp.sqrt(squares / jnp.maximum(count - 1, 1))
    threshold = jnp.where(count > 1, mean + std, jnp.inf)

    # 3. Positives; an anchor positive for several gts keeps the highest IoU.
    positive = (
        candidate & (ious >= threshold[:, None]) & inside_boxes(points, boxes, margin=INSIDE_MARGIN)
    )
    best = jnp.argmax(jnp.where(positive, ious, -jnp.inf), axis=0)
    gt_index = jnp.where(positive.any(axis=0), best, -1)
    num_won = jnp.bincount(gt_index + 1, length=boxes.shape[0] + 1)[1:].astype(jnp.int32)
    return make_assignment(gt_index, inputs, num_won)


@jax.jit
def _assign_batch(args: AssignArgs, config: ATSSConfig) -> Assignment:
    run = partial(vmap_images, _atss_one_image, config=config)
    return buckets.by_real_gts(args, run, sizes=config.sizes)


def atss_assign(
    pred_boxes: ArrayLike,
    cls_logits: ArrayLike,
    points: ArrayLike,
    strides: ArrayLike,
    gt_boxes: ArrayLike,
    gt_labels: ArrayLike,
    gt_mask: ArrayLike,
    *,
    obj_logits: ArrayLike | None = None,
    config: ATSSConfig = ATSSConfig(),
) -> Assignment:
    """ATSS label assignment for one image (see the module docstring). Predictions
    play no part; ``pred_boxes`` only feed ``Assignment.ious``.

    Args:
      pred_boxes: ``[A, 4]`` predicted boxes, xyxy pixels.
      cls_logits: ``[A, C]`` class logits.
      points: ``[A, 2]`` anchor point centres ``(x, y)`` in pixels.
      strides: ``[A]`` stride of each anchor's FPN level.
      gt_boxes: ``[M, 4]`` gt boxes, xyxy pixels; M may be 0.
      gt_labels: ``[M]`` int gt classes in ``[0, C)``.
      gt_mask: ``[M]`` bool, True for real gts, False for padding.
      obj_logits: optional ``[A]``; unused, accepted for a common signature.
      config: an `ATSSConfig`; its float fields are traced (a sweep compiles once).

    Returns:
      An `Assignment`; ``dynamic_k [M]`` counts the anchors each gt won. Invalid gts are
      ignored like padding. An image without gts or without anchors is all background.

    Raises:
      ValueError, TypeError: arguments whose shapes or dtypes do not fit, or a
        config of another class; the message names them.
    """
    args = AssignArgs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    return assign_one_image(_assign_batch, args, config, ATSSConfig, "atss_assign")


def atss_assign_batch(
    pred_boxes: ArrayLike,
    cls_logits: ArrayLike,
    points: ArrayLike,
    strides: ArrayLike,
    gt_boxes: ArrayLike,
    gt_labels: ArrayLike,
    gt_mask: ArrayLike,
    *,
    obj_logits: ArrayLike | None = None,
    config: ATSSConfig = ATSSConfig(),
) -> Assignment:
    """ATSS label assignment for a batch of images, all at once.

    Args:
      pred_boxes: ``[B, A, 4]`` predicted boxes, xyxy pixels.
      cls_logits: ``[B, A, C]`` class logits.
      points: ``[A, 2]`` anchor point centres ``(x, y)`` in pixels, shared by all images.
      strides: ``[A]`` stride of each anchor's FPN level, shared by all images.
      gt_boxes: ``[B, M, 4]`` gt boxes, xyxy pixels, padded to a common M (may be 0).
      gt_labels: ``[B, M]`` int gt classes in ``[0, C)``.
      gt_mask: ``[B, M]`` bool, True for real gts, False for padding; padding never
        changes a result.
      obj_logits: optional ``[B, A]``, as for `atss_assign`.
      config: an `ATSSConfig`; its float fields are traced (a sweep compiles once).

    Returns:
      An `Assignment` with a leading ``[B]`` on every field, each image's as
      `atss_assign` gives it. A batch of no images (``B == 0``) gives every field
      with 0 images.

    Raises:
      ValueError, TypeError: as `atss_assign`; a shape error lists every batched shape.
    """
    args = AssignArgs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    return assign_batch(_assign_batch, args, config, ATSSConfig, "atss_assign_batch")
