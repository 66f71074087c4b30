"""Assigner configs as pytrees: float hyperparameters traced, the rest static."""

from __future__ import annotations

import dataclasses
import numbers
import typing
from typing import TypeVar

import jax

__all__ = ["assigner_config", "check_config"]

T = TypeVar("T")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def assigner_config(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen dataclass registered as a pytree, as ott-jax's solvers are.

    Fields annotated ``float`` (weights, radii, penalties, thresholds, epsilon) are
    traced leaves: a sweep over them compiles once. Every other field fixes a shape
    or the control flow (top-k sizes, iteration counts, prior kinds, bucket sizes)
    and is static metadata: changing it compiles anew. A float field whose value
    chooses the arithmetic says so with ``dataclasses.field(metadata={"static": True})``.

    ``cls.__post_init__``, if any, validates the fields; it runs when every float
    field holds a number, and is skipped when JAX rebuilds the config from traced
    leaves (a tracer has no value to check).
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    traced = tuple(
        f.name for f in fields if hints[f.name] is float and not f.metadata.get("static")
    )
    static = tuple(f.name for f in fields if f.name not in traced)
    validate = getattr(cls, "__post_init__", None)
    if validate is not None:

        def __post_init__(self) -> None:
            if all(_is_number(getattr(self, name)) for name in traced):
                validate(self)

        # The generated __init__ looks __post_init__ up when it runs.
        cls.__post_init__ = __post_init__
    return jax.tree_util.register_dataclass(cls, data_fields=list(traced), meta_fields=list(static))


def check_config(config, expected: type, function: str) -> None:
    """TypeError unless ``config`` is an ``expected`` (an assigner's config class)."""
    if not isinstance(config, expected):
        raise TypeError(
            f"{function} takes config={expected.__name__}(...), got {type(config).__name__}: "
            f"{config!r}"
        )
