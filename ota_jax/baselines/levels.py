"""FPN levels recovered from the per-anchor ``strides [A]`` the assigners receive.

A level is a distinct stride value, finest first, wherever its anchors sit in the
anchor order. `level_index` and `rank_within_level` sort instead of looping over
levels, so they work on traced strides with no static bound on the number of
levels; `smallest_per_level` takes a per-level ``top_k`` when the levels fit a
static bound (much faster than a sort on a CPU) and falls back to the sort.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["level_index", "rank_within_level", "smallest_per_level"]


def level_index(strides: Array) -> Array:
    """``[A]`` int32 level of each anchor: 0 for the smallest distinct stride, 1 for the
    next, and so on (the dense rank of its stride)."""
    ordered = jnp.sort(strides)
    # Level of each sorted entry: how many value changes precede it.
    changes = jnp.cumsum(ordered[1:] != ordered[:-1], dtype=jnp.int32)
    level_of_sorted = jnp.concatenate([jnp.zeros(min(strides.shape[0], 1), jnp.int32), changes])
    return level_of_sorted[jnp.searchsorted(ordered, strides, side="left")]


def rank_within_level(scores: Array, strides: Array) -> Array:
    """``[M, A]`` int32 rank of each anchor among the anchors of its own level, by
    ascending ``scores [M, A]`` (one row per gt); equal scores rank the lower anchor
    index first. ``rank < k`` marks each level's k smallest scores (all of a level with
    fewer than k anchors), as a per-level ``topk(largest=False)`` would.
    """
    num_rows = scores.shape[0]
    anchor_ids = jax.lax.broadcasted_iota(jnp.int32, scores.shape, 1)
    # One sort by (level, score, anchor index): each level becomes a contiguous run.
    # The index is a key so that ties are ordered whatever the sort's stability.
    level_key = jnp.broadcast_to(strides, scores.shape)
    *_, order = jax.lax.sort((level_key, scores, anchor_ids), dimension=1, num_keys=3)
    positions = jnp.zeros(scores.shape, jnp.int32)
    positions = positions.at[jnp.arange(num_rows)[:, None], order].set(anchor_ids)
    # A level's run starts after all anchors of smaller stride.
    level_start = jnp.searchsorted(jnp.sort(strides), strides, side="left").astype(jnp.int32)
    return positions - level_start[None, :]


def smallest_per_level(scores: Array, strides: Array, k: int, *, max_levels: int = 8) -> Array:
    """``[M, A]`` bool: each level's ``k`` smallest ``scores [M, A]`` per row (all of a level
    with fewer anchors), equal scores taking the lower anchor index first; the same as
    ``rank_within_level(scores, strides) < k``.

    With at most ``max_levels`` distinct strides, one ``lax.top_k`` per level; with more,
    the sort of `rank_within_level` (same result, slower).
    """
    num_anchors = strides.shape[0]
    count = min(k, num_anchors)
    levels = jnp.unique(strides, size=max_levels, fill_value=jnp.nan)  # NaN matches no anchor
    num_levels = 1 + jnp.count_nonzero(jnp.diff(jnp.sort(strides)))
    rows = jnp.arange(scores.shape[0])[:, None]

    def by_top_k(scores: Array) -> Array:
        chosen = jnp.zeros(scores.shape, bool)
        for level in range(max_levels):
            masked = jnp.where(strides == levels[level], scores, jnp.inf)
            # top_k of the negated scores: the smallest first, lower index first on ties.
            values, index = jax.lax.top_k(-masked, count)
            chosen = chosen.at[rows, index].max(values > -jnp.inf)
        return chosen

    def by_sort(scores: Array) -> Array:
        return rank_within_level(scores, strides) < k

    if num_anchors == 0:
        return jnp.zeros(scores.shape, bool)
    return jax.lax.cond(num_levels <= max_levels, by_top_k, by_sort, scores)
