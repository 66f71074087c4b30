"""OTA: Optimal Transport Assignment (Ge et al., CVPR 2021), batched and jitted.

Each real gt supplies ``k`` positive labels (dynamic k), a background supplier
covers the remaining anchors, the cost is focal loss plus ``reg_weight *
-log IoU`` (with a large penalty outside each gt's candidate region), and
entropic optimal transport decides who supplies whom. This module reproduces
the official implementation's assignments (see ``ASSIGNERS.md``) without its
per-image loop or its ``[M, A, C]`` cost tensor.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ota_jax import buckets
from ota_jax.assignment import (
    AssignInputs,
    Assignment,
    finite_cost,
    make_assignment,
    prepare_inputs,
    public_assigners,
)
from ota_jax.compaction import (
    expand_plan,
    kept_columns,
    needed_columns,
    per_anchor_plan,
    solve_compacted,
)
from ota_jax.costs import focal_loss_negative, focal_relative_cost, joint_logits
from ota_jax.dynamic_k import dynamic_k
from ota_jax.priors import inside_boxes, inside_centre_regions
from ota_jax.transport import solve_transport

__all__ = ["OTAConfig", "ota_assign", "ota_assign_batch"]


@dataclasses.dataclass(frozen=True)
class OTAConfig:
    """OTA hyperparameters; the defaults are the official code's.

    Attributes:
      center_radius: half-width of the centre region, in strides (clipped to the box).
      candidate_topk: q, the number of top IoUs summed for dynamic k.
      reg_weight: weight of the ``-log IoU`` regression cost.
      epsilon: absolute entropic regularisation of Sinkhorn.
      num_iters: Sinkhorn iterations, all of them run (no early stop).
      focal_alpha, focal_gamma: focal loss of the classification cost.
      penalty: cost added where the anchor is not a candidate of the gt.
      iou_eps: IoUs are clamped at this value below before the log.
      in_box_margin: an anchor is inside a gt box when all four distances exceed it.
      max_columns: solve the transport on at most this many anchors, the candidates
        of some gt plus ``extra_columns`` cheapest anchors of each gt without
        candidates, all other anchors folded into one background-only column (see
        `ota_jax.compaction`; same assignments, much less work). When an image of
        the batch needs more columns, the whole batch falls back to the dense
        problem. ``None``: always dense.
      extra_columns: anchors kept for each gt without any candidate.
      return_transport: also return the cost, plan and marginal errors.
    """

    center_radius: float = 2.5
    candidate_topk: int = 20
    reg_weight: float = 1.5
    epsilon: float = 0.1
    num_iters: int = 50
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    penalty: float = 1e6
    iou_eps: float = 1e-6
    in_box_margin: float = 0.01
    max_columns: int | None = 4096
    extra_columns: int = 16
    return_transport: bool = False

    def __post_init__(self):
        if self.candidate_topk < 1 or self.num_iters < 1:
            raise ValueError("candidate_topk and num_iters must be at least 1")
        if self.max_columns is not None and self.max_columns < 1:
            raise ValueError("max_columns must be positive or None")
        if not (self.epsilon > 0 and self.center_radius > 0 and self.iou_eps > 0):
            raise ValueError("epsilon, center_radius and iou_eps must be positive")


class _Problem(NamedTuple):
    """One image's transport problem, before solving, without its costs: those are
    computed on the columns the solver sees only (`_costs_at`; on every anchor the
    background's focal loss over all classes was most of OTA's work), and on every
    anchor only for gts without candidates (`_needed_columns`)."""

    inputs: AssignInputs
    candidates: Array  # [M, A] step 1, real gts only
    has_candidate: Array  # [M] real gts with at least one candidate


def _candidates(points, strides, gt_boxes, gt_mask, config: OTAConfig) -> Array:
    """Step 1, ``[M, A]`` OTA candidate pairs: inside the box and its clipped centre region."""
    return (
        inside_boxes(points, gt_boxes, margin=config.in_box_margin)
        & inside_centre_regions(points, strides, gt_boxes, config.center_radius, clip_to_box=True)
        & gt_mask[:, None]
    )


def _build_problem(
    pred_boxes,
    cls_logits,
    points,
    strides,
    gt_boxes,
    gt_labels,
    gt_mask,
    obj_logits,
    candidates,
    config: OTAConfig,
) -> _Problem:
    """One image's inputs and the ``candidates [M, A]`` of step 1 (`_candidates`,
    computed once per batch); the supplies and costs come later, on the columns
    solved (`_supplies`, `_costs_at`)."""
    inputs = prepare_inputs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    candidates = candidates & inputs.gt_mask[:, None]  # drop gts prepare_inputs found invalid
    return _Problem(inputs=inputs, candidates=candidates, has_candidate=candidates.any(axis=1))


def _supplies(
    ious: Array, candidates: Array, gt_mask: Array, num_anchors: int, config: OTAConfig
) -> tuple[Array, Array]:
    """Step 4: ``[M]`` dynamic k of each gt and the ``[M+1]`` supplies (k per gt,
    the rest of the ``num_anchors`` units to the background), from the ``ious [M, K]``
    and ``candidates [M, K]`` of K columns that hold every candidate: the top-q IoUs
    over the candidates are the same on them as on all anchors, and are sorted from
    K columns instead of A (on a GPU, where q = 20 is past XLA's top-k kernel, that
    was a radix sort of the whole ``[B, M, A]`` batch: OTA 1.15x to 1.27x faster)."""
    k = dynamic_k(ious, candidates, gt_mask, topk=config.candidate_topk)
    background = jnp.maximum(num_anchors - k.sum(), 0)
    return k, jnp.concatenate([k, background[None]]).astype(jnp.float32)


def _relative_costs(
    inputs: AssignInputs, candidates: Array, has_candidate: Array, index: Array, config: OTAConfig
) -> Array:
    """Steps 2 and 5 on the anchors ``index [K]``, ``[M, K]``: the cost of each gt
    minus the background's. Focal loss vs the one-hot label (`focal_relative_cost`) +
    reg_weight * -log IoU, plus the official ``penalty`` outside the ``candidates
    [M, K]`` (those at ``index``). A gt without any candidate (``has_candidate [M]``,
    over all anchors) would get the penalty everywhere: a per-row constant, left out
    of its row (see `_shift_rows`) so that float32 can still tell its anchors apart."""
    obj_logits = None if inputs.obj_logits is None else inputs.obj_logits[index]
    class_logits = jnp.take(inputs.cls_logits[index], inputs.gt_labels, axis=1)  # [K, M]
    gt_logits = joint_logits(class_logits, obj_logits).T
    relative = finite_cost(
        focal_relative_cost(gt_logits, alpha=config.focal_alpha, gamma=config.focal_gamma)
        - config.reg_weight * jnp.log(jnp.maximum(inputs.ious[:, index], config.iou_eps))
    )
    return relative + config.penalty * (~candidates & has_candidate[:, None])


def _costs_at(problem: _Problem, index: Array, config: OTAConfig) -> Array:
    """Steps 2-3 and 5 on the anchors ``index [K]``: ``[M+1, K]`` costs, background
    row (focal loss against all-zero targets) last."""
    inputs = problem.inputs
    obj_logits = None if inputs.obj_logits is None else inputs.obj_logits[index]
    logits = joint_logits(inputs.cls_logits[index], obj_logits)
    background_cost = finite_cost(
        focal_loss_negative(logits, alpha=config.focal_alpha, gamma=config.focal_gamma).sum(-1)
    )
    candidates = problem.candidates[:, index]
    relative = _relative_costs(inputs, candidates, problem.has_candidate, index, config)
    gt_cost = finite_cost(relative + background_cost[None, :])
    gt_cost = jnp.where(inputs.gt_mask[:, None], gt_cost, 0.0)
    return jnp.concatenate([gt_cost, background_cost[None]])


# Gts without candidates whose cheapest anchors an image searches for on their own
# rows; an image with more searches with every gt row.
_CANDIDATE_LESS_ROWS = 4


def _needed_columns(problems: _Problem, config: OTAConfig) -> Array:
    """``[B, A]`` the anchors each image's compacted problem keeps (`needed_columns`).

    The search for the cheapest anchors of gts without candidates is the only part
    of OTA that needs costs on every anchor. It runs only when the batch has such a
    gt, and only on those gts' rows (the first `_CANDIDATE_LESS_ROWS` of each image,
    or every gt row when an image has more)."""
    candidates = problems.candidates
    kept = candidates.any(axis=1)
    if config.extra_columns == 0:
        return kept
    num_gt, num_anchors = candidates.shape[1:]
    candidate_less = problems.inputs.gt_mask & ~problems.has_candidate  # [B, M]
    order = buckets.real_gts_first(candidate_less)  # candidate-less gts first

    def search(rows: int):
        def cheapest(inputs: AssignInputs, order: Array, less: Array) -> Array:
            take = lambda x: x[order[:rows]]
            inputs = inputs._replace(gt_labels=take(inputs.gt_labels), ious=take(inputs.ious))
            none = jnp.zeros((rows, num_anchors), bool)
            every = jnp.arange(num_anchors)
            relative = _relative_costs(inputs, none, none.any(axis=1), every, config)
            return needed_columns(none, relative, take(less), extra=config.extra_columns)

        return lambda: kept | jax.vmap(cheapest)(problems.inputs, order, candidate_less)

    sizes = sorted({min(_CANDIDATE_LESS_ROWS, num_gt), num_gt})
    most = candidate_less.sum(axis=1).max()
    index = jnp.where(most == 0, 0, 1 + buckets.bucket_index([most], [sizes]))
    return buckets.switch(index, [lambda: kept, *(search(rows) for rows in sizes)])


def _shift_rows(
    cost: Array, valid: Array, problem: _Problem, config: OTAConfig
) -> tuple[Array, Array]:
    """Each gt row of ``cost [M+1, K]`` minus its minimum over the ``valid [K]``
    columns, and the ``row_offset [M+1]`` that tells `solve_transport` so.

    A per-row constant changes neither the optimum nor (with the row potential
    started at minus that constant) any Sinkhorn iterate; the offset also holds the
    penalty left out of candidate-less gts' rows. Numerically the rows stay
    well-scaled instead of holding values near 1e6.
    """
    gt_mask = problem.inputs.gt_mask
    gt_cost = cost[:-1]
    row_min = gt_cost.min(axis=1, initial=jnp.inf, where=gt_mask[:, None] & valid[None, :])
    row_min = jnp.where(gt_mask & jnp.isfinite(row_min), row_min, 0.0)
    gt_cost = jnp.where(gt_mask[:, None], gt_cost - row_min[:, None], 0.0)
    penalty_offset = config.penalty * (gt_mask & ~problem.has_candidate)  # left out of the row
    row_offset = jnp.concatenate([row_min + penalty_offset, jnp.zeros(1)])
    return jnp.concatenate([gt_cost, cost[-1:]]), row_offset


def _solve_and_decode(
    problem: _Problem, needed: Array, config: OTAConfig, columns: int | None
) -> Assignment:
    """The transport on ``columns`` kept anchors (``needed [A]``) plus a folded
    column (``columns=None``: on every anchor), and its assignment."""
    num_anchors = problem.candidates.shape[1]
    gt_mask = problem.inputs.gt_mask
    if columns is None:
        k, supply = _supplies(problem.inputs.ious, problem.candidates, gt_mask, num_anchors, config)
        cost, row_offset = _dense_costs(problem, config)
        transport = solve_transport(
            cost,
            supply,
            jnp.ones(num_anchors),
            epsilon=config.epsilon,
            num_iters=config.num_iters,
            row_offset=row_offset,
        )
        gt_index = _decode(transport.plan, gt_mask)
    else:
        index, valid = kept_columns(needed, columns)
        k, supply = _supplies(
            problem.inputs.ious[:, index],
            problem.candidates[:, index] & valid[None, :],
            gt_mask,
            num_anchors,
            config,
        )
        cost, row_offset = _shift_rows(_costs_at(problem, index, config), valid, problem, config)
        transport = solve_compacted(
            cost,
            supply,
            index,
            valid,
            num_anchors,
            epsilon=config.epsilon,
            num_iters=config.num_iters,
            row_offset=row_offset,
        )
        # Decoded on the kept columns and one folded anchor, which holds exactly
        # what the dense plan holds there; the folded anchors are background.
        plan = per_anchor_plan(transport.plan, valid, num_anchors)
        at = jnp.where(valid, index, num_anchors)
        gt_index = jnp.full(num_anchors, -1).at[at].set(_decode(plan, gt_mask)[:-1], mode="drop")
        if config.return_transport:  # dense, as the dense problem's
            full_cost, _ = _dense_costs(problem, config)
            transport = transport._replace(
                plan=expand_plan(plan, index, valid, num_anchors),
                cost=full_cost,
                demand=jnp.ones(num_anchors, jnp.float32),
            )
    return make_assignment(
        gt_index,
        problem.inputs,
        k,
        transport if config.return_transport else None,
    )


def _dense_costs(problem: _Problem, config: OTAConfig) -> tuple[Array, Array]:
    """`_shift_rows` of the costs on every anchor: the dense problem's."""
    num_anchors = problem.candidates.shape[1]
    every = jnp.arange(num_anchors)
    every_cost = _costs_at(problem, every, config)
    return _shift_rows(every_cost, jnp.ones(num_anchors, bool), problem, config)


def _decode(plan: Array, gt_mask: Array) -> Array:
    """6. Scale each row of ``plan [M+1, K]`` to a maximum of 1; each column takes
    the best row: ``[K]`` gt index, -1 for background."""
    row_max = plan.max(axis=1, keepdims=True)
    usable = jnp.concatenate([gt_mask, jnp.ones(1, bool)])[:, None] & (row_max > 0)
    scores = jnp.where(usable, plan / jnp.where(row_max > 0, row_max, 1.0), -1.0)
    best = jnp.argmax(scores, axis=0)
    is_gt = (best < gt_mask.shape[0]) & (scores.max(axis=0) > 0)
    return jnp.where(is_gt, best, -1)


def _assign_at_size(
    args: tuple, config: OTAConfig, *, problem: _Problem, needed: Array, columns: int | None
) -> Assignment:
    """The batch's ``problem`` with the transport on ``columns`` anchors, the
    ``needed [B, A]`` ones (None: all of them). ``args`` are in the problem."""
    del args
    return jax.vmap(partial(_solve_and_decode, config=config, columns=columns))(problem, needed)


def _assign_batch(args: tuple, config: OTAConfig) -> Assignment:
    return buckets.by_real_gts(args, partial(_assign_real_gts, config=config))


def _assign_real_gts(args: tuple, config: OTAConfig) -> Assignment:
    """Build the batch's problems once, then solve them at the column bucket that
    holds the anchors every image's compacted problem keeps."""
    _, _, points, strides, gt_boxes, _, gt_mask, _ = args
    candidates = jax.vmap(partial(_candidates, config=config), in_axes=(None, None, 0, 0))(
        points, strides, gt_boxes, gt_mask
    )
    problem = jax.vmap(
        partial(_build_problem, config=config), in_axes=(0, 0, None, None, 0, 0, 0, 0, 0)
    )(*args, candidates)
    needed = candidates.any(axis=1)
    if config.max_columns is not None:  # else always dense: nothing to keep
        needed = _needed_columns(problem, config)
    run = partial(_assign_at_size, config=config, problem=problem, needed=needed)
    return buckets.by_columns(args, needed.sum(axis=1).max(), config.max_columns, run)


ota_assign, ota_assign_batch = public_assigners(
    _assign_batch,
    OTAConfig,
    name="ota",
    summary="""OTA label assignment for one image.""",
    obj_logits="""optional ``[A]`` objectness logits (YOLOX-style heads); the class
        probability in the focal cost becomes ``sqrt(sigmoid(cls) * sigmoid(obj))``.""",
    returns="""An `Assignment`. All arithmetic is float32 under ``stop_gradient``.

    Gts that are padded, or whose box is empty, inverted or non-finite, or whose
    label is out of range, are ignored. NaN/inf predictions never produce NaN:
    such pairs get a very large cost and an IoU of 0. A gt with no candidate
    anchor (a box smaller than the stride, between anchor centres) still ships
    its ``k`` labels, to the anchors where its cost is lowest relative to the
    background, as in the official code; here that part of the plan is computed
    to float32 precision instead of being float32 rounding noise around 1e6.""",
)
