"""The result every assigner returns."""

from __future__ import annotations

from typing import NamedTuple

from jax import Array

from ota_jax.transport import Transport

__all__ = ["Assignment"]


class Assignment(NamedTuple):
    """Which gt each anchor point trains on, and its targets. One image: leading dims
    are absent; a batch adds a leading ``[B]`` to every field.

    Attributes:
      gt_index: ``[A]`` int32, the gt each anchor is assigned to, -1 for background.
      fg_mask: ``[A]`` bool, ``gt_index >= 0``.
      labels: ``[A]`` int32 class of the assigned gt, -1 for background
        (``jax.nn.one_hot`` turns -1 into an all-zero target).
      box_targets: ``[A, 4]`` float32 xyxy box of the assigned gt, zeros for background.
      ious: ``[A]`` float32 IoU of each positive's predicted box with its gt, 0 for
        background (the target of an IoU branch).
      num_fg: ``[]`` int32 number of positive anchors.
      dynamic_k: ``[M]`` int32 labels each gt supplies, 0 for padded gts. Rule-based
        assigners without a k (FCOS, ATSS, Max-IoU) report the positives each gt won,
        TAL the anchors each gt took before conflicts.
      ignore_mask: ``[A]`` bool, anchors that are neither positive nor negative (Max-IoU's
        band between its two thresholds); losses leave them out. All False elsewhere.
      transport: OTA only, when asked for (``OTAConfig(return_transport=True)``) and M > 0:
        the solved problem, cost and plan ``[M+1, A]`` with the background row last.
      soft_targets: TAL only (None for every other assigner): ``[A]`` float32, the
        normalised alignment metric of each positive, 0 for background: the soft
        classification target at the gt's class in TOOD (mmdet's
        ``norm_alignment_metrics``) and YOLOv8 (ultralytics' ``norm_align_metric``);
        see `ota_jax.baselines.tal`.
    """

    gt_index: Array
    fg_mask: Array
    labels: Array
    box_targets: Array
    ious: Array
    num_fg: Array
    dynamic_k: Array
    ignore_mask: Array | None = None
    transport: Transport | None = None
    soft_targets: Array | None = None
