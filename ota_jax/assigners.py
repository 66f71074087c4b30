"""Every assigner by name: its batched function and its config class.

One table for everything that picks an assigner by name (the detector's loss,
``ota-train`` configs, the benchmarks and the study), so adding an assigner
here makes it available everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ota_jax.assignment import Assignment
from ota_jax.baselines import (
    ATSSConfig,
    DSLConfig,
    FCOSAssignConfig,
    MaxIoUConfig,
    TALConfig,
    atss_assign_batch,
    dsl_assign_batch,
    fcos_assign_batch,
    max_iou_assign_batch,
    tal_assign_batch,
)
from ota_jax.ota import OTAConfig, ota_assign_batch
from ota_jax.simota import SimOTAConfig, simota_assign_batch

__all__ = ["ASSIGNERS", "AssignerSpec", "get_assigner"]


class AssignerSpec(NamedTuple):
    """A registered assigner.

    Attributes:
      assign_batch: the batched, jitted function, signature of `ota_jax.ota_assign_batch`.
      config_class: its frozen config dataclass (passed as ``config=``).
    """

    assign_batch: Callable[..., Assignment]
    config_class: type


ASSIGNERS: dict[str, AssignerSpec] = {
    "ota": AssignerSpec(ota_assign_batch, OTAConfig),
    "simota": AssignerSpec(simota_assign_batch, SimOTAConfig),
    "fcos": AssignerSpec(fcos_assign_batch, FCOSAssignConfig),
    "atss": AssignerSpec(atss_assign_batch, ATSSConfig),
    "max_iou": AssignerSpec(max_iou_assign_batch, MaxIoUConfig),
    "tal": AssignerSpec(tal_assign_batch, TALConfig),
    "dsl": AssignerSpec(dsl_assign_batch, DSLConfig),
}


def get_assigner(name: str) -> AssignerSpec:
    """The `AssignerSpec` registered as ``name``; a ValueError lists the known names."""
    if name not in ASSIGNERS:
        raise ValueError(f"unknown assigner {name!r}; one of {sorted(ASSIGNERS)}")
    return ASSIGNERS[name]
