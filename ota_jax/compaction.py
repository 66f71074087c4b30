"""Exact candidate compaction: solve OTA's transport on the anchors that matter.

An anchor that is no gt's candidate costs every gt with candidates the penalty
(its plan entry there is exactly 0 in float32), so only the background ships to
it. Such anchors leave the matrix; their total demand goes to one extra column
that only the background row reaches. That is exact, iterate for iterate: in
every column update each folded anchor's background entry is set to the same
value, so one column of demand ``n`` stands for all ``n`` of them.

Gts without any candidate (boxes smaller than the stride) are the exception: in
the dense problem they ship to their cheapest anchors relative to the
background. Their ``extra_columns`` cheapest anchors stay in the matrix; their
plan mass beyond those is what the compacted problem drops (it is
``exp(-cost_gap / epsilon)`` small, far below what decides an assignment).

The kept anchors are gathered into a static number of columns. When an image
needs more, the caller uses a larger size bucket or the dense problem
(`ota_jax.buckets.by_columns`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from ota_jax.transport import Transport, solve_transport

__all__ = ["needed_columns", "solve_compacted"]

# Cost of the folded column for the gt rows: exp(-_UNREACHABLE / epsilon) is 0.
_UNREACHABLE = 1e8


def needed_columns(
    candidates: Array, gt_cost: Array, background_cost: Array, gt_mask: Array, *, extra: int
) -> Array:
    """``[A]`` bool: the anchors a compacted OTA problem must keep.

    Args:
      candidates: ``[M, A]`` bool candidate pairs (real gts only).
      gt_cost: ``[M, A]`` cost of each gt (any per-row shift is fine).
      background_cost: ``[A]`` cost of the background row.
      gt_mask: ``[M]`` bool real gts.
      extra: static count of cheapest anchors kept for each gt without candidates.
    """
    needed = candidates.any(axis=0)
    num_gt, num_anchors = gt_cost.shape
    if num_gt == 0 or extra == 0:
        return needed
    candidate_less = gt_mask & ~candidates.any(axis=1)
    _, cheapest = jax.lax.top_k(-(gt_cost - background_cost[None, :]), min(extra, num_anchors))
    keep = jnp.broadcast_to(candidate_less[:, None], cheapest.shape)
    return needed.at[cheapest.reshape(-1)].max(keep.reshape(-1))


def solve_compacted(
    cost: Array,
    supply: Array,
    needed: Array,
    *,
    max_columns: int,
    epsilon: float,
    num_iters: int,
    row_offset: Array | None = None,
) -> Transport:
    """`solve_transport` on the ``needed`` columns plus one folded background column.

    Args:
      cost: ``[N, A]`` with the background as the last row.
      supply: ``[N]`` row marginals; every anchor demands 1.
      needed: ``[A]`` bool from `needed_columns`; at most ``max_columns`` set (else the
        surplus is silently folded: callers pick ``max_columns`` from an upper bound).
      max_columns: static number of columns gathered.
      epsilon, num_iters, row_offset: as for `solve_transport`.

    Returns:
      A `Transport` whose ``plan`` and ``cost`` are scattered back to ``[N, A]``: a
      folded anchor gets the background's per-anchor share of the folded column,
      which equals its dense plan entry. Marginal errors are those of the compacted
      problem.
    """
    num_rows, num_anchors = cost.shape
    columns = jnp.nonzero(needed, size=max_columns, fill_value=0)[0]
    valid = jnp.arange(max_columns) < needed.sum()
    num_folded = (num_anchors - needed.sum()).astype(jnp.float32)

    folded_cost = jnp.full((num_rows, 1), _UNREACHABLE).at[-1].set(0.0)
    compact_cost = jnp.concatenate([cost[:, columns], folded_cost], axis=1)
    demand = jnp.concatenate([valid.astype(jnp.float32), num_folded[None]])
    solved = solve_transport(
        compact_cost, supply, demand, epsilon=epsilon, num_iters=num_iters, row_offset=row_offset
    )

    kept_plan = jnp.where(valid[None, :], solved.plan[:, :max_columns], 0.0)
    plan = jnp.zeros((num_rows, num_anchors), jnp.float32).at[:, columns].add(kept_plan)
    folded_share = solved.plan[-1, -1] / jnp.maximum(num_folded, 1.0)
    plan = plan.at[-1].set(jnp.where(needed, plan[-1], folded_share))
    return solved._replace(plan=plan, cost=cost, demand=jnp.ones(num_anchors, jnp.float32))
