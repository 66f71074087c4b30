"""The OTA training losses of an FCOS head with an IoU branch.

As the official OTA code's HEAD (``FCOS.losses`` in its ``fcos.py``, since
commit a468e5c):

- classification: sigmoid focal loss (alpha 0.25, gamma 2) over every valid
  anchor and class, summed, divided by the number of positives;
- box: ``2 * sum(1 - GIoU) / max(1, num_pos)`` over positives
  (``LossConfig.box_loss="giou"``);
- IoU branch: ``0.5 * sum(BCE(iou_logit, t))`` over positives / number of positives,
  ``t`` the IoU of the positive's predicted box with its gt at assignment time.

The official code's first commit weighted the box loss by the IoU targets,
``2 * sum((1 - GIoU) * t) / max(1, sum(t))``; ``box_loss="iou_weighted_giou"``
keeps that form.

The official code divides each GPU's sums by the all-reduced *mean* count and
then averages gradients over GPUs, which equals the global sum over the global
count. Under ``jit`` a sharded batch is one global array, so here the sums and
counts simply run over the whole batch (XLA inserts the all-reduce).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

from ota_jax.assigners import get_assigner
from ota_jax.assignment import Assignment
from ota_jax.boxes import elementwise_giou
from ota_jax.detector.model import FCOSOutput

__all__ = [
    "AssignFn",
    "LossConfig",
    "assign_targets",
    "detection_loss",
    "losses_from_assignment",
    "resolve_assigner",
]

# A batched assigner with the signature of `ota_jax.ota_assign_batch`.
AssignFn = Callable[..., Assignment]

# Stand-in box for anchors whose box loss is masked out: keeps GIoU and its
# gradient finite there even when the prediction is inf/NaN (the double-where trick).
_DUMMY_BOX = np.array([0.0, 0.0, 1.0, 1.0], np.float32)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Static loss settings (hashable).

    Attributes:
      assigner: a name in `ota_jax.assigners.ASSIGNERS` (``"ota"``, ``"simota"``, the
        baselines) or a batched callable with the signature of `ota_jax.ota_assign_batch`.
      assigner_config: the assigner's config (`ota_jax.OTAConfig`, ...); ``None`` uses
        the assigner's default.
      iou_branch_as_objectness: pass the IoU logits to the assigner as
        ``obj_logits`` (its class score becomes ``sqrt(sigmoid(cls) * sigmoid(iou))``,
        the inference score). The official OTA cost uses the class logits only.
      focal_alpha, focal_gamma: focal loss parameters.
      box_loss: ``"giou"`` (the official code's HEAD: the GIoU losses of the
        positives summed and divided by their number) or ``"iou_weighted_giou"``
        (its first commit: each positive's GIoU loss weighted by its IoU target,
        divided by the summed targets).
      box_weight: weight of the box loss (2.0).
      iou_weight: weight of the IoU-branch BCE (0.5).
    """

    assigner: str | AssignFn = "ota"
    assigner_config: Any = None
    iou_branch_as_objectness: bool = False
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_loss: Literal["giou", "iou_weighted_giou"] = "giou"
    box_weight: float = 2.0
    iou_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.box_loss not in ("giou", "iou_weighted_giou"):
            raise ValueError(
                f"unknown box_loss {self.box_loss!r}; one of 'giou', 'iou_weighted_giou'"
            )


def resolve_assigner(assigner: str | AssignFn) -> AssignFn:
    """A batched assign function from a name in `ota_jax.assigners.ASSIGNERS` or a callable."""
    if callable(assigner):
        return assigner
    return get_assigner(assigner).assign_batch


def assign_targets(
    outputs: FCOSOutput,
    points: Array,
    strides: Array,
    batch: Mapping[str, Array],
    *,
    config: LossConfig = LossConfig(),
) -> Assignment:
    """Run the assigner on a batch's predictions, float32, without gradient.

    Args:
      outputs: model outputs with a leading ``[B]`` axis.
      points: ``[A, 2]`` anchor centres; strides: ``[A]``.
      batch: ``gt_boxes [B, M, 4]`` xyxy pixels, ``gt_labels [B, M]`` int32,
        ``gt_mask [B, M]`` bool.

    Returns:
      A batched `Assignment` (every field with a leading ``[B]``).
    """
    assign = resolve_assigner(config.assigner)
    predictions = jax.lax.stop_gradient(
        (
            outputs.pred_boxes.astype(jnp.float32),
            outputs.cls_logits.astype(jnp.float32),
            outputs.iou_logits.astype(jnp.float32),
        )
    )
    pred_boxes, cls_logits, iou_logits = predictions
    kwargs: dict[str, Any] = {}
    if config.assigner_config is not None:
        kwargs["config"] = config.assigner_config
    if config.iou_branch_as_objectness:
        kwargs["obj_logits"] = iou_logits
    assignment = assign(
        pred_boxes,
        cls_logits,
        points,
        strides,
        batch["gt_boxes"].astype(jnp.float32),
        batch["gt_labels"].astype(jnp.int32),
        batch["gt_mask"].astype(bool),
        **kwargs,
    )
    return jax.lax.stop_gradient(assignment)


def losses_from_assignment(
    outputs: FCOSOutput,
    assignment: Assignment,
    *,
    config: LossConfig = LossConfig(),
    anchor_mask: Array | None = None,
) -> dict[str, Array]:
    """The three weighted OTA losses given targets.

    Args:
      outputs: ``cls_logits [B, A, C]``, ``pred_boxes [B, A, 4]``, ``iou_logits [B, A]``.
      assignment: batched targets (``fg_mask``, ``labels``, ``box_targets``, ``ious``);
        anchors in its ``ignore_mask`` are left out of the classification loss.
      anchor_mask: optional ``[B, A]`` (or ``[A]``) bool, anchors that count for the
        classification loss (e.g. not in image padding); default all.

    Returns:
      ``loss_cls``, ``loss_box`` (as ``config.box_loss``), ``loss_iou`` (scalars,
      weights applied),
      ``num_pos`` (positives in the whole batch, float32) and ``mean_pos_iou``
      (mean IoU of the positives' predicted boxes with their gts).
    """
    cls_logits = outputs.cls_logits.astype(jnp.float32)
    pred_boxes = outputs.pred_boxes.astype(jnp.float32)
    iou_logits = outputs.iou_logits.astype(jnp.float32)
    fg = assignment.fg_mask
    target_ious = jnp.where(fg, assignment.ious, 0.0)
    num_pos = fg.sum(dtype=jnp.float32)
    pos_norm = jnp.maximum(num_pos, 1.0)

    cls_targets = jax.nn.one_hot(assignment.labels, cls_logits.shape[-1], dtype=jnp.float32)
    focal = optax.sigmoid_focal_loss(
        cls_logits, cls_targets, alpha=config.focal_alpha, gamma=config.focal_gamma
    ).sum(axis=-1)
    counted = ~assignment.ignore_mask if assignment.ignore_mask is not None else True
    if anchor_mask is not None:
        counted = counted & anchor_mask
    focal = jnp.where(jnp.broadcast_to(counted, focal.shape), focal, 0.0)
    loss_cls = focal.sum() / pos_norm

    safe_pred = jnp.where(fg[..., None], pred_boxes, _DUMMY_BOX)
    safe_target = jnp.where(fg[..., None], assignment.box_targets, _DUMMY_BOX)
    giou_loss = jnp.where(fg, 1.0 - elementwise_giou(safe_pred, safe_target), 0.0)
    if config.box_loss == "iou_weighted_giou":
        # The official first commit: normalised by the summed IoU targets, clamped at 1.
        box_norm = jnp.maximum(target_ious.sum(), 1.0)
        giou_loss = giou_loss * target_ious
    else:
        box_norm = pos_norm
    loss_box = config.box_weight * giou_loss.sum() / box_norm

    bce = optax.sigmoid_binary_cross_entropy(iou_logits, target_ious)
    loss_iou = config.iou_weight * jnp.where(fg, bce, 0.0).sum() / pos_norm
    return {
        "loss_cls": loss_cls,
        "loss_box": loss_box,
        "loss_iou": loss_iou,
        "num_pos": num_pos,
        "mean_pos_iou": target_ious.sum() / pos_norm,
    }


def detection_loss(
    outputs: FCOSOutput,
    points: Array,
    strides: Array,
    batch: Mapping[str, Array],
    *,
    config: LossConfig = LossConfig(),
    anchor_mask: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Assign targets and compute the OTA loss of a batch.

    Args:
      outputs: `FCOSOutput` with a leading ``[B]`` axis (float32 fields).
      points: ``[A, 2]`` anchor centres in pixels; strides: ``[A]`` (from
        ``FCOS.anchors``).
      batch: ``gt_boxes [B, M, 4]`` xyxy pixels, ``gt_labels [B, M]`` int32,
        ``gt_mask [B, M]`` bool.
      config: a `LossConfig` (static under jit).
      anchor_mask: optional ``[B, A]`` bool of anchors that count for the class loss.

    Returns:
      ``(loss [], parts)`` with parts ``loss_cls``, ``loss_box``, ``loss_iou``,
      ``num_pos`` (batch total), ``mean_pos_iou`` and ``pos_per_gt`` (positives
      per real gt).
    """
    assignment = assign_targets(outputs, points, strides, batch, config=config)
    parts = losses_from_assignment(outputs, assignment, config=config, anchor_mask=anchor_mask)
    num_gt = batch["gt_mask"].astype(bool).sum(dtype=jnp.float32)
    parts["pos_per_gt"] = parts["num_pos"] / jnp.maximum(num_gt, 1.0)
    loss = parts["loss_cls"] + parts["loss_box"] + parts["loss_iou"]
    return loss, parts
