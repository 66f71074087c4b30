"""ota_jax: OTA and SimOTA label assignment for object detection in JAX.

Pure, jitted functions for one image (``ota_assign``, ``simota_assign``) and
for padded batches (``*_assign_batch``), returning an `Assignment`.
"""

from ota_jax import anchors, boxes, costs, priors, transport
from ota_jax.anchors import anchor_points
from ota_jax.assignment import Assignment
from ota_jax.dynamic_k import dynamic_k
from ota_jax.ota import OTAConfig, ota_assign, ota_assign_batch
from ota_jax.simota import SimOTAConfig, simota_assign, simota_assign_batch
from ota_jax.transport import Transport, solve_transport

__version__ = "0.1.0"

__all__ = [
    "Assignment",
    "OTAConfig",
    "SimOTAConfig",
    "Transport",
    "anchor_points",
    "anchors",
    "boxes",
    "costs",
    "dynamic_k",
    "ota_assign",
    "ota_assign_batch",
    "priors",
    "simota_assign",
    "simota_assign_batch",
    "solve_transport",
    "transport",
]
