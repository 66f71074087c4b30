"""The library's frozen configs built from an ``ml_collections`` training config.

Each function turns one branch of the config tree (see ``configs/_base.py``)
into the dataclass the library takes; unknown keys are reported by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

import ml_collections

from ota_jax.assigners import ASSIGNERS
from ota_jax.detector import (
    FCOSConfig,
    LossConfig,
    OptimizerConfig,
    PostprocessConfig,
    fcos_config,
)

__all__ = [
    "PRETRAINED_BACKBONES",
    "PRETRAINED_DEFAULTS",
    "ConfigError",
    "image_size",
    "loss_config",
    "model_config",
    "optimizer_config",
    "postprocess_config",
    "pretrained_path",
    "validate",
]


class ConfigError(ValueError):
    """A training config that cannot run; the message names the field."""


T = TypeVar("T")


def _plain(value: Any) -> Any:
    """ConfigDicts to dicts and lists to tuples: the frozen configs want hashable values."""
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_plain(item) for item in value)
    return value


def _build(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    """``cls(**values)`` with unknown keys named in the error."""
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown {cls.__name__} fields {unknown}; known: {sorted(known)}"
        )
    try:
        return cls(**values)
    except (ValueError, TypeError) as error:  # The dataclass's own checks: name the branch.
        raise ConfigError(f"{where}: {error}") from None


def _set_fields(branch: ml_collections.ConfigDict) -> dict[str, Any]:
    """The fields of a placeholder branch that were given a value (not None)."""
    return {key: value for key, value in _plain(branch).items() if value is not None}


# What ``config.model.pretrained`` sets unless ``config.model.overrides`` say otherwise:
# detectron2's and cvpods' fine-tuning of ImageNet weights.
PRETRAINED_DEFAULTS = {"backbone_norm": "frozen_batch", "backbone_frozen_stages": 2}
# The backbones torchvision has weights for (at their default width).
PRETRAINED_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")


def pretrained_path(config: ml_collections.ConfigDict) -> str | None:
    """``config.model.pretrained``: the backbone's torchvision weights, or None."""
    return config.model.get("pretrained") or None


def model_config(config: ml_collections.ConfigDict, num_classes: int) -> FCOSConfig:
    """`FCOSConfig` from ``config.model``: a preset plus the overrides that are set.

    With ``config.model.pretrained`` the backbone defaults to frozen BatchNorm and a
    frozen stem and first stage (`PRETRAINED_DEFAULTS`).
    """
    overrides = _set_fields(config.model.overrides)
    known = {field.name for field in dataclasses.fields(FCOSConfig)} - {"num_classes"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"config.model.overrides: unknown FCOSConfig fields {unknown}")
    if pretrained_path(config):
        overrides = {**PRETRAINED_DEFAULTS, **overrides}
        if overrides["backbone_norm"] != "frozen_batch":
            raise ConfigError(
                "config.model.pretrained needs config.model.overrides.backbone_norm="
                f"'frozen_batch' (got {overrides['backbone_norm']!r})"
            )
    model = fcos_config(config.model.preset, num_classes=num_classes, **overrides)
    if pretrained_path(config) and (
        model.backbone not in PRETRAINED_BACKBONES or model.backbone_width not in (None, 64)
    ):
        raise ConfigError(
            f"config.model.pretrained: torchvision has no {model.backbone!r} backbone "
            f"of width {model.backbone_width}; use one of {PRETRAINED_BACKBONES}"
        )
    return model


def loss_config(config: ml_collections.ConfigDict) -> LossConfig:
    """`LossConfig` from ``config.loss``: the assigner, its settings, the loss weights."""
    assigner = config.loss.assigner
    if assigner not in ASSIGNERS:
        raise ConfigError(f"config.loss.assigner: {assigner!r} is not one of {list(ASSIGNERS)}")
    settings = _set_fields(config.loss[assigner])
    assigner_config = (
        _build(ASSIGNERS[assigner].config_class, settings, f"config.loss.{assigner}")
        if settings
        else None  # The assigner's own defaults.
    )
    values = {"assigner": assigner, "assigner_config": assigner_config}
    return _build(LossConfig, {**values, **_set_fields(config.loss.overrides)}, "config.loss")


def optimizer_config(config: ml_collections.ConfigDict) -> OptimizerConfig:
    """`OptimizerConfig` from ``config.optimizer``; ``total_steps`` None is ``train.steps``."""
    values = _plain(config.optimizer)
    if values.get("total_steps") is None:
        values["total_steps"] = config.train.steps
    return _build(OptimizerConfig, values, "config.optimizer")


def postprocess_config(config: ml_collections.ConfigDict) -> PostprocessConfig:
    """`PostprocessConfig` from the inference fields of ``config.eval``."""
    names = [field.name for field in dataclasses.fields(PostprocessConfig)]
    return PostprocessConfig(**{name: config.eval[name] for name in names})


def image_size(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """``config.dataset.image_size`` as ``(H, W)``."""
    size = _plain(config.dataset.image_size)
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ConfigError(f"config.dataset.image_size must be an int or (H, W), got {size}")
    return int(size[0]), int(size[1])


# Integer settings and their least value.
_AT_LEAST = {
    "train.steps": 1,
    "train.batch_size": 1,
    "train.log_every": 1,
    "train.checkpoint_every": 1,
    "train.keep_checkpoints": 1,
    "train.eval_every": 0,
    "eval.batch_size": 1,
    "eval.num_draw_images": 0,
    "dataset.max_gt": 1,
}


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every setting before anything runs, so a bad value stops the run at once.

    Builds each library config (whose own checks run too), resolves the dataset
    and optimizer names and checks the ranges of the loop's integers.

    Raises:
      ConfigError: the first bad setting, named (``config.loss.ota: ...``).
    """
    from ota_jax.data import registry
    from ota_jax.detector import make_optimizer

    for path, least in _AT_LEAST.items():
        branch, name = path.split(".")
        value = config[branch][name]
        if not isinstance(value, int) or value < least:
            raise ConfigError(f"config.{path} must be an integer >= {least}, got {value!r}")
    try:
        spec, _ = registry.resolve(config.dataset.name)
    except ValueError as error:
        raise ConfigError(f"config.dataset.name: {error}") from None
    height, width = image_size(config)
    if min(height, width) < 1:
        raise ConfigError(f"config.dataset.image_size must be positive, got {(height, width)}")
    for where, build in (
        ("config.model", lambda: model_config(config, spec.num_classes)),
        ("config.loss", lambda: loss_config(config)),
        ("config.optimizer", lambda: make_optimizer(optimizer_config(config))),
        ("config.eval", lambda: postprocess_config(config)),
    ):
        try:
            build()
        except ConfigError:
            raise
        except (ValueError, TypeError, KeyError) as error:
            message = str(error)
            if not message.startswith("config."):
                message = f"{where}: {message}"
            raise ConfigError(message) from None
