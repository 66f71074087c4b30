"""Size buckets: run a padded batch at the smallest static size that holds it.

Gts are padded to a static ``M`` (often 100) and anchors number ``A`` (8400 to
21824), but a COCO batch has a few real gts per image and a few hundred anchors
that matter. Each bucket is one compiled branch of a ``lax.switch`` with smaller
static shapes; the batch picks the first bucket its real sizes fit, so only that
branch runs. Padding never changes a result, so neither does the bucket.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import Array

from ota_jax.assignment import Assignment

__all__ = [
    "bucket_index",
    "ladder",
    "real_gts_first",
    "restore_gt_order",
    "scatter_gt_rows",
    "switch",
    "take_gt_rows",
]


def ladder(limit: int, *, start: int, factor: int = 4) -> tuple[int, ...]:
    """Ascending sizes ``start, start*factor, ...`` capped by and ending at ``limit``."""
    sizes = []
    size = start
    while size < limit:
        sizes.append(size)
        size *= factor
    return (*sizes, limit)


def bucket_index(needs: Sequence[Array], ladders: Sequence[Sequence[int]]) -> Array:
    """``[]`` int32: the first bucket ``s`` with ``needs[i] <= ladders[i][s]`` for every i.

    All ladders have the same length and end with sizes that hold anything.
    """
    fits = jnp.stack(
        [need <= jnp.asarray(sizes) for need, sizes in zip(needs, ladders, strict=True)]
    ).all(axis=0)
    return jnp.argmax(fits).astype(jnp.int32)


def real_gts_first(gt_mask: Array) -> Array:
    """``[B, M]`` int32 permutation of each image's gt slots: real gts first, in order."""
    return jnp.argsort(~gt_mask, axis=-1, stable=True).astype(jnp.int32)


def scatter_gt_rows(rows: Array, order: Array, num_gt: int, fill: float | int = 0) -> Array:
    """Put ``rows [R, ...]`` of the first R slots of ``order [M]`` back at their slots:
    ``[num_gt, ...]``, ``fill`` elsewhere."""
    out = jnp.full((num_gt, *rows.shape[1:]), fill, rows.dtype)
    return out.at[order[: rows.shape[0]]].set(rows)


def take_gt_rows(x: Array, order: Array, rows: int) -> Array:
    """``x [B, M, ...]`` at the first ``rows`` slots of ``order [B, M]``: ``[B, rows, ...]``."""
    index = order[:, :rows].reshape(order.shape[0], rows, *([1] * (x.ndim - 2)))
    return jnp.take_along_axis(x, index, axis=1)


def switch(index: Array, branches: Sequence, *operands):
    """``lax.switch``, skipping it when there is a single branch."""
    if len(branches) == 1:
        return branches[0](*operands)
    return jax.lax.switch(index, list(branches), *operands)


def restore_gt_order(assignment: Assignment, order: Array, num_gt: int) -> Assignment:
    """One image's assignment computed on the first R slots of ``order [M]``, in the
    caller's gt numbering (``num_gt`` slots)."""
    gt_index = jnp.where(assignment.gt_index >= 0, order[assignment.gt_index], -1)
    transport = assignment.transport
    if transport is not None:
        rows = transport.plan.shape[0] - 1

        def gt_rows_back(x, fill=0.0):
            return jnp.concatenate([scatter_gt_rows(x[:rows], order, num_gt, fill), x[rows:]])

        transport = transport._replace(
            plan=gt_rows_back(transport.plan),
            cost=gt_rows_back(transport.cost),
            supply=gt_rows_back(transport.supply),
        )
    return assignment._replace(
        gt_index=gt_index,
        dynamic_k=scatter_gt_rows(assignment.dynamic_k, order, num_gt),
        transport=transport,
    )
