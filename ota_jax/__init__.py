"""ota_jax: OTA and SimOTA label assignment for object detection in JAX.

Pure, jitted functions for one image (``ota_assign``, ``simota_assign`` and the
baselines ``fcos_assign``, ``atss_assign``, ``max_iou_assign``, ``tal_assign``,
``dsl_assign``) and for padded batches (``*_assign_batch``), all returning an
`Assignment`; `ota_jax.assigners.ASSIGNERS` lists them by name.
"""

from ota_jax import anchors, assigners, boxes, costs, priors, transport
from ota_jax._src.buckets import Sizes, resolve_sizes
from ota_jax._src.matching import dynamic_k, dynamic_k_matching
from ota_jax.anchors import anchor_points
from ota_jax.assignment import Assignment
from ota_jax.baselines import (
    ATSSConfig,
    DSLConfig,
    FCOSAssignConfig,
    MaxIoUConfig,
    TALConfig,
    atss_assign,
    atss_assign_batch,
    dsl_assign,
    dsl_assign_batch,
    fcos_assign,
    fcos_assign_batch,
    max_iou_assign,
    max_iou_assign_batch,
    tal_assign,
    tal_assign_batch,
)
from ota_jax.ota import OTAConfig, ota_assign, ota_assign_batch
from ota_jax.simota import SimOTAConfig, simota_assign, simota_assign_batch
from ota_jax.transport import Transport, solve_transport

__version__ = "0.1.0"

__all__ = [
    "ATSSConfig",
    "Assignment",
    "DSLConfig",
    "FCOSAssignConfig",
    "MaxIoUConfig",
    "OTAConfig",
    "SimOTAConfig",
    "Sizes",
    "TALConfig",
    "Transport",
    "anchor_points",
    "anchors",
    "assigners",
    "atss_assign",
    "atss_assign_batch",
    "boxes",
    "costs",
    "dsl_assign",
    "dsl_assign_batch",
    "dynamic_k",
    "dynamic_k_matching",
    "fcos_assign",
    "fcos_assign_batch",
    "max_iou_assign",
    "max_iou_assign_batch",
    "ota_assign",
    "ota_assign_batch",
    "priors",
    "resolve_sizes",
    "simota_assign",
    "simota_assign_batch",
    "solve_transport",
    "tal_assign",
    "tal_assign_batch",
    "transport",
]
