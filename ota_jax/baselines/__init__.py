"""The assigners OTA is compared against, with the signature and result of `ota_assign`.

Rule-based (geometry only; the predictions feed just ``Assignment.ious``):
FCOS (centre sampling + scale ranges), ATSS (adaptive IoU threshold) and Max-IoU
(RetinaNet, with ignored anchors). Prediction-aware: TAL (TOOD/YOLOv8
task-aligned top-k) and DSL (RTMDet's dynamic soft label). Each module's
docstring states its exact semantics; ``../shared/ASSIGNERS.md`` is the spec.
"""

from ota_jax.baselines.atss import ATSSConfig, atss_assign, atss_assign_batch
from ota_jax.baselines.dsl import DSLConfig, dsl_assign, dsl_assign_batch
from ota_jax.baselines.fcos import FCOSAssignConfig, fcos_assign, fcos_assign_batch
from ota_jax.baselines.max_iou import MaxIoUConfig, max_iou_assign, max_iou_assign_batch
from ota_jax.baselines.tal import TALConfig, tal_assign, tal_assign_batch

__all__ = [
    "ATSSConfig",
    "DSLConfig",
    "FCOSAssignConfig",
    "MaxIoUConfig",
    "TALConfig",
    "atss_assign",
    "atss_assign_batch",
    "dsl_assign",
    "dsl_assign_batch",
    "fcos_assign",
    "fcos_assign_batch",
    "max_iou_assign",
    "max_iou_assign_batch",
    "tal_assign",
    "tal_assign_batch",
]
