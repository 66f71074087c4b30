"""What every public assigner function does around its batched implementation:
check the config and the arguments, resolve the config's sizes (once, outside
tracing), give the defined result where there is no work (no image, no anchor),
and run the jitted implementation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ota_jax._src.buckets import resolve_sizes
from ota_jax._src.config import check_config
from ota_jax._src.inputs import AssignArgs, background_assignment, check_inputs
from ota_jax.assignment import Assignment

__all__ = ["BatchAssigner", "assign_batch", "assign_one_image"]

# ``impl(args, config)``: an assigner on checked, batched `AssignArgs` with at least one
# image and one anchor, jitted with both arguments as pytrees.
BatchAssigner = Callable[[AssignArgs, Any], Assignment]


def assign_batch(
    impl: BatchAssigner, args: AssignArgs, config: Any, config_class: type, name: str
) -> Assignment:
    """``impl`` on a batch, after the checks; ``name`` is the public function's."""
    check_config(config, config_class, name)
    return _run(impl, check_inputs(args, batched=True), config)


def assign_one_image(
    impl: BatchAssigner, args: AssignArgs, config: Any, config_class: type, name: str
) -> Assignment:
    """``impl`` on one image: a batch of one, without its batch axis."""
    check_config(config, config_class, name)
    args = check_inputs(args, batched=False)
    shared = ("points", "strides")
    batch = AssignArgs(
        *(x if x is None or n in shared else x[None] for n, x in args._asdict().items())
    )
    return jax.tree.map(lambda x: x[0], _run(impl, batch, config))


def _run(impl: BatchAssigner, args: AssignArgs, config: Any) -> Assignment:
    """``impl`` on checked, batched ``args``, or the defined result without work."""
    # "auto" depends on the backend and OTA_JAX_BUCKETS: read here, never under tracing.
    sizes = resolve_sizes(config.sizes)
    if sizes is not config.sizes:
        config = dataclasses.replace(config, sizes=sizes)
    num_images, num_gt = args.gt_mask.shape
    num_anchors = args.points.shape[0]
    if num_anchors == 0:  # static: no anchor to assign, whatever the gts
        empty = background_assignment(0, num_gt)
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_images, *x.shape)), empty)
    if num_images == 0:  # static: each field as for one image, with 0 along the batch
        one = jax.tree.map(lambda x: jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype), args)
        one = one._replace(points=args.points, strides=args.strides)
        shapes = jax.eval_shape(impl, one, config)
        return jax.tree.map(lambda s: jnp.zeros((0, *s.shape[1:]), s.dtype), shapes)
    return impl(args, config)
