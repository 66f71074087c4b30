"""Max-IoU label assignment (RetinaNet/YOLOv3 style), as mmdetection's ``MaxIoUAssigner``
with RetinaNet's settings (``min_pos_iou=0``, ``gt_max_assign_all=True``).

Each anchor point carries one square anchor box of side ``anchor_scale * stride``;
IoU is that box's with each real gt.

1. Each anchor looks at its best gt (highest IoU, the first gt on equal IoUs): it is
   positive for that gt when the IoU is >= ``pos_iou_thr``, background when it is
   < ``neg_iou_thr``, and ignored in between (``ignore_mask``, ``gt_index`` -1).
2. Low-quality matches (``match_low_quality``): every gt whose best IoU over all
   anchors is > 0 also takes every anchor with exactly that IoU, even below the
   thresholds; gts go in order, so a later gt overrides an earlier one on a shared
   anchor. mmdet tests ``>= min_pos_iou = 0``, which hands a gt that overlaps no
   anchor every anchor (all at IoU 0); we require an overlap.

An image without real gts is all background. Predictions play no part.
``dynamic_k`` is the number of anchors each gt won.
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
from ota_jax.boxes import pairwise_iou

__all__ = ["MaxIoUConfig", "max_iou_assign", "max_iou_assign_batch"]


@assigner_config
class MaxIoUConfig:
    """Max-IoU hyperparameters; the defaults are RetinaNet's in mmdetection.

    Attributes:
      pos_iou_thr: an anchor whose best IoU reaches this is positive; must be > 0.
      neg_iou_thr: an anchor whose best IoU is below this is background; the anchors
        in ``[neg_iou_thr, pos_iou_thr)`` are ignored. ``0 <= neg_iou_thr <= pos_iou_thr``.
      anchor_scale: side of each anchor box, in strides.
      match_low_quality: each gt also takes its best-overlapping anchors (step 2).
      sizes: the static sizes it runs at: ``"auto"``, ``"cpu"``, ``"accelerator"``,
        ``"off"`` (one program at the padded size) or a `ota_jax.Sizes` (see
        `ota_jax.resolve_sizes`).
    """

    pos_iou_thr: float = 0.5
    neg_iou_thr: float = 0.4
    anchor_scale: float = 8.0
    match_low_quality: bool = True
    sizes: str | buckets.Sizes = "auto"

    def __post_init__(self):
        if not 0 < self.pos_iou_thr:
            raise ValueError(f"pos_iou_thr must be positive, got {self.pos_iou_thr}")
        if not 0 <= self.neg_iou_thr <= self.pos_iou_thr:
            raise ValueError(
                f"need 0 <= neg_iou_thr <= pos_iou_thr, got neg_iou_thr={self.neg_iou_thr}, "
                f"pos_iou_thr={self.pos_iou_thr}"
            )
        if not self.anchor_scale > 0:
            raise ValueError(f"anchor_scale must be positive, got {self.anchor_scale}")


def _max_iou_one_image(
    pred_boxes,
    cls_logits,
    points,
    strides,
    gt_boxes,
    gt_labels,
    gt_mask,
    obj_logits,
    config: MaxIoUConfig,
) -> Assignment:
    inputs = prepare_inputs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    gt_mask = inputs.gt_mask
    num_gt = gt_mask.shape[0]
    anchors = anchor_boxes(inputs.points, inputs.strides, scale=config.anchor_scale)
    # Padded gts at -1: below every real IoU, and below neg_iou_thr when no gt is real.
    ious = jnp.where(gt_mask[:, None], pairwise_iou(inputs.gt_boxes, anchors), -1.0)

    # 1. Thresholds on each anchor's best IoU.
    best_iou, best_gt = ious.max(axis=0), jnp.argmax(ious, axis=0)
    gt_index = jnp.where(best_iou >= config.pos_iou_thr, best_gt, -1)
    ignore = (best_iou >= config.neg_iou_thr) & (best_iou < config.pos_iou_thr)

    # 2. Each overlapping gt takes its best anchors; the last such gt in order wins,
    # as in mmdet's loop over gts.
    if config.match_low_quality:
        gt_best = ious.max(axis=1, keepdims=True)
        takes = (ious == gt_best) & (gt_best > 0)
        last_gt = num_gt - 1 - jnp.argmax(takes[::-1], axis=0)
        gt_index = jnp.where(takes.any(axis=0), last_gt, gt_index)

    num_won = jnp.bincount(gt_index + 1, length=num_gt + 1)[1:].astype(jnp.int32)
    return make_assignment(gt_index, inputs, num_won, ignore_mask=ignore)


@jax.jit
def _assign_batch(args: AssignArgs, config: MaxIoUConfig) -> Assignment:
    run = partial(vmap_images, _max_iou_one_image, config=config)
    return buckets.by_real_gts(args, run, sizes=config.sizes)


def max_iou_assign(
    pred_boxes: ArrayLike,
    cls_logits: ArrayLike,
    points: ArrayLike,
    strides: ArrayLike,
    gt_boxes: ArrayLike,
    gt_labels: ArrayLike,
    gt_mask: ArrayLike,
    *,
    obj_logits: ArrayLike | None = None,
    config: MaxIoUConfig = MaxIoUConfig(),
) -> Assignment:
    """Max-IoU label assignment for one image (see the module docstring). Predictions
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
      config: a `MaxIoUConfig`; its float fields are traced (a sweep compiles once).

    Returns:
      An `Assignment`; ``ignore_mask [A]`` marks the anchors between the thresholds and
      ``dynamic_k [M]`` counts the anchors each gt won. Invalid gts are ignored like
      padding. An image without gts or without anchors is all background.

    Raises:
      ValueError, TypeError: arguments whose shapes or dtypes do not fit, or a
        config of another class; the message names them.
    """
    args = AssignArgs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    return assign_one_image(_assign_batch, args, config, MaxIoUConfig, "max_iou_assign")


def max_iou_assign_batch(
    pred_boxes: ArrayLike,
    cls_logits: ArrayLike,
    points: ArrayLike,
    strides: ArrayLike,
    gt_boxes: ArrayLike,
    gt_labels: ArrayLike,
    gt_mask: ArrayLike,
    *,
    obj_logits: ArrayLike | None = None,
    config: MaxIoUConfig = MaxIoUConfig(),
) -> Assignment:
    """Max-IoU label assignment for a batch of images, all at once.

    Args:
      pred_boxes: ``[B, A, 4]`` predicted boxes, xyxy pixels.
      cls_logits: ``[B, A, C]`` class logits.
      points: ``[A, 2]`` anchor point centres ``(x, y)`` in pixels, shared by all images.
      strides: ``[A]`` stride of each anchor's FPN level, shared by all images.
      gt_boxes: ``[B, M, 4]`` gt boxes, xyxy pixels, padded to a common M (may be 0).
      gt_labels: ``[B, M]`` int gt classes in ``[0, C)``.
      gt_mask: ``[B, M]`` bool, True for real gts, False for padding; padding never
        changes a result.
      obj_logits: optional ``[B, A]``, as for `max_iou_assign`.
      config: a `MaxIoUConfig`; its float fields are traced (a sweep compiles once).

    Returns:
      An `Assignment` with a leading ``[B]`` on every field, each image's as
      `max_iou_assign` gives it. A batch of no images (``B == 0``) gives every field
      with 0 images.

    Raises:
      ValueError, TypeError: as `max_iou_assign`; a shape error lists every batched shape.
    """
    args = AssignArgs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    return assign_batch(_assign_batch, args, config, MaxIoUConfig, "max_iou_assign_batch")
