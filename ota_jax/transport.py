"""Entropic optimal transport for label assignment: the only module that calls ott-jax.

OTA solves, per image, an entropic transport problem between M+1 suppliers
(the gts and the background) and A demanders (the anchors, one unit each),
with an absolute epsilon and a fixed number of log-domain Sinkhorn iterations,
exactly as the official OTA code does.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import Array
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn

__all__ = ["Transport", "solve_transport"]


class Transport(NamedTuple):
    """A solved transport problem and its diagnostics.

    Attributes:
      plan: ``[N, A]`` float32 transport plan (row n: what supplier n ships).
      cost: ``[N, A]`` float32 cost the problem was solved with.
      supply: ``[N]`` row marginals asked for.
      demand: ``[A]`` column marginals asked for.
      supply_error: ``[]`` L1 distance between the plan's row sums and ``supply``.
      demand_error: ``[]`` L1 distance between the plan's column sums and ``demand``.
    """

    plan: Array
    cost: Array
    supply: Array
    demand: Array
    supply_error: Array
    demand_error: Array


def solve_transport(
    cost: Array,
    supply: Array,
    demand: Array,
    *,
    epsilon: float,
    num_iters: int,
    row_offset: Array | None = None,
) -> Transport:
    """Entropic OT with exactly ``num_iters`` log-domain Sinkhorn iterations (ott-jax).

    Each iteration updates the column (anchor) potentials first, then the row
    (supplier) potentials, as the official OTA code does. Starting potentials are
    constant, except that ``row_offset`` says that ``cost`` had ``row_offset[n]``
    subtracted from row n for conditioning: the row potentials then start at
    ``-row_offset``, which makes every iterate, and so the plan, exactly those of
    the unshifted problem in exact arithmetic, while float32 only ever sees the
    well-scaled shifted costs.

    Args:
      cost: ``[N, A]`` float32, finite.
      supply: ``[N]`` non-negative; a zero supply gives an all-zero row.
      demand: ``[A]`` positive.
      epsilon: absolute entropic regularisation (never rescaled by the cost).
      num_iters: iteration count; there is no early stop.
      row_offset: ``[N]`` optional, see above.

    Returns:
      A `Transport` with the plan and its marginal errors.
    """
    geom = geometry.Geometry(cost_matrix=cost, epsilon=epsilon)
    problem = linear_problem.LinearProblem(geom, a=supply, b=demand)
    # ott runs its iterations in blocks of `inner_iterations` and measures the
    # marginal error after each block, for an early stop this solver never makes.
    # One block of all the iterations measures it once: the same iterates, 3% to 7%
    # less of OTA's time on a CPU (4 of 5 error passes gone at 50 iterations) and
    # fewer kernels on an accelerator.
    solver = sinkhorn.Sinkhorn(
        min_iterations=num_iters,
        max_iterations=num_iters,
        inner_iterations=num_iters,
        implicit_diff=None,
    )
    if row_offset is None:
        row_offset = jnp.zeros_like(supply)
    # A row without supply has potential -inf from its first update on; it must
    # start there too, or it would weigh in the first column update. Column
    # potentials need no start value: the first update overwrites them.
    init_rows = jnp.where(supply > 0, -row_offset, -jnp.inf)
    output = solver(problem, init=(init_rows, jnp.zeros_like(demand)))
    plan = output.matrix
    return Transport(
        plan=plan,
        cost=cost,
        supply=supply,
        demand=demand,
        supply_error=jnp.abs(plan.sum(axis=1) - supply).sum(),
        demand_error=jnp.abs(plan.sum(axis=0) - demand).sum(),
    )
