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
    valid_gts,
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
      sizes: the static sizes it runs at: ``"auto"``, ``"cpu"``, ``"accelerator"``,
        ``"off"`` (one program at the padded size) or a `ota_jax.Sizes` (see
        `ota_jax.resolve_sizes`).
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
    sizes: str | buckets.Sizes = "auto"

    def __post_init__(self):
        if self.candidate_topk < 1 or self.num_iters < 1:
            raise ValueError("candidate_topk and num_iters must be at least 1")
        if self.max_columns is not None and self.max_columns < 1:
            raise ValueError("max_columns must be positive or None")
        if not (self.epsilon > 0 and self.center_radius > 0 and self.iou_eps > 0):
            raise ValueError("epsilon, center_radius and iou_eps must be positive")


class _Problem(NamedTuple):
    """One image's transport problem on K anchors (all of them, or the kept columns of
    a compacted problem), before its supplies and costs (`_supplies`, `_costs`)."""

    inputs: AssignInputs  # on the K anchors
    candidates: Array  # [M, K] step 1, real gts only
    has_candidate: Array  # [M] real gts with at least one candidate


def _candidates(points, strides, gt_boxes, gt_mask, config: OTAConfig) -> Array:
    """Step 1, ``[M, A]`` OTA candidate pairs: inside the box and its clipped centre region."""
    return (
        inside_boxes(points, gt_boxes, margin=config.in_box_margin)
        & inside_centre_regions(points, strides, gt_boxes, config.center_radius, clip_to_box=True)
        & gt_mask[:, None]
    )


def _problem(*args, config: OTAConfig, valid: Array | None = None) -> _Problem:
    """One image's problem from its assigner arguments (``pred_boxes``, ``cls_logits``,
    ``points``, ``strides`` and ``obj_logits`` on K anchors). ``valid [K]``: False at
    the padding of kept columns. On kept columns, which hold every candidate anchor,
    ``has_candidate`` is the same as on all anchors."""
    inputs = prepare_inputs(*args)
    candidates = _candidates(inputs.points, inputs.strides, inputs.gt_boxes, inputs.gt_mask, config)
    if valid is not None:
        candidates = candidates & valid[None, :]
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
    inputs: AssignInputs, candidates: Array, has_candidate: Array, config: OTAConfig
) -> Array:
    """Steps 2 and 5, ``[M, K]``: the cost of each gt minus the background's on the
    K anchors of ``inputs``. Focal loss vs the one-hot label (`focal_relative_cost`) +
    reg_weight * -log IoU, plus the official ``penalty`` outside the ``candidates
    [M, K]``. A gt without any candidate (``has_candidate [M]``, over all anchors)
    would get the penalty everywhere: a per-row constant, left out of its row (see
    `_shift_rows`) so that float32 can still tell its anchors apart."""
    class_logits = jnp.take(inputs.cls_logits, inputs.gt_labels, axis=1)  # [K, M]
    gt_logits = joint_logits(class_logits, inputs.obj_logits).T
    relative = finite_cost(
        focal_relative_cost(gt_logits, alpha=config.focal_alpha, gamma=config.focal_gamma)
        - config.reg_weight * jnp.log(jnp.maximum(inputs.ious, config.iou_eps))
    )
    return relative + config.penalty * (~candidates & has_candidate[:, None])


def _costs(problem: _Problem, config: OTAConfig) -> Array:
    """Steps 2-3 and 5: ``[M+1, K]`` costs, background row (focal loss against
    all-zero targets) last."""
    inputs = problem.inputs
    logits = joint_logits(inputs.cls_logits, inputs.obj_logits)
    background_cost = finite_cost(
        focal_loss_negative(logits, alpha=config.focal_alpha, gamma=config.focal_gamma).sum(-1)
    )
    relative = _relative_costs(inputs, problem.candidates, problem.has_candidate, config)
    gt_cost = finite_cost(relative + background_cost[None, :])
    gt_cost = jnp.where(inputs.gt_mask[:, None], gt_cost, 0.0)
    return jnp.concatenate([gt_cost, background_cost[None]])


# Gts without candidates whose cheapest anchors an image searches for on their own
# rows; an image with more searches with 16 rows, or every gt row.
_CANDIDATE_LESS_ROWS = 4
_CANDIDATE_LESS_SEARCHES = (_CANDIDATE_LESS_ROWS, 16)


def _needed_anchors(args: tuple, config: OTAConfig) -> Array:
    """``[B, A]`` the anchors each image's compacted problem keeps (`needed_columns`):
    the candidates of every gt, and the ``extra_columns`` cheapest anchors of each gt
    without candidates.

    Found on the real gts' bucket before the transport's buckets are chosen, so that
    the transport is built on the kept anchors only (its IoUs too: OTA 1.23x to 1.31x
    faster on a 2-core CPU than when they were gathered from all anchors) and its gt
    and column buckets are one switch (`ota_jax.buckets.by_real_gts`). On an H100
    that one host read of a branch index instead of two gained little (1.01x
    yolox640, 1.05x fcos1024): this switch, which holds no loop, runs as a CUDA
    graph conditional, whose launch leaves the device idle about as long."""
    num_gt = args[6].shape[1]
    find = partial(_candidates_at_real_gts, num_gt=num_gt, config=config)
    kept, candidate_less = buckets.on_real_gts(args, find, sizes=config.sizes)
    if config.extra_columns == 0:
        return kept
    # The search below runs once, outside the gt buckets' switch: compiled once,
    # not once per gt bucket (see docs/performance_history.md). Its gts are in
    # `candidate_less`'s order, real gts first.
    order = buckets.real_gts_first(args[6])
    gt_boxes, gt_labels = (buckets.take_gt_rows(x, order, num_gt) for x in args[4:6])
    return _with_cheapest(args, kept, candidate_less, gt_boxes, gt_labels, config)


def _candidates_at_real_gts(args: tuple, num_gt: int, config: OTAConfig) -> tuple[Array, Array]:
    """The batch ``args``, its gts cut to a bucket of R: ``[B, A]`` anchors that are
    some gt's candidate, and ``[B, num_gt]`` the real gts without any candidate
    (the R cut slots, then False)."""
    _, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, _ = args
    valid = valid_gts(gt_boxes, gt_labels, gt_mask, cls_logits.shape[-1])
    gt_boxes = jnp.where(valid[..., None], gt_boxes, 0.0)
    candidates = jax.vmap(partial(_candidates, config=config), in_axes=(None, None, 0, 0))(
        points, strides, gt_boxes, valid
    )
    candidate_less = valid & ~candidates.any(axis=2)  # [B, R]
    rows = candidate_less.shape[1]
    return candidates.any(axis=1), jnp.pad(candidate_less, ((0, 0), (0, num_gt - rows)))


def _with_cheapest(
    args: tuple, kept: Array, candidate_less: Array, gt_boxes, gt_labels, config: OTAConfig
) -> Array:
    """``kept [B, A]`` and the ``extra_columns`` cheapest anchors of each gt of
    ``candidate_less [B, M]`` (with its ``gt_boxes``, ``gt_labels``)."""
    pred_boxes, cls_logits, points, strides, _, _, _, obj_logits = args
    num_gt, num_anchors = candidate_less.shape[1], points.shape[0]

    # The search for the cheapest anchors of gts without candidates is the only part
    # of OTA that needs costs on every anchor. It runs only when the batch has such a
    # gt, and only on those gts' rows (the first `_CANDIDATE_LESS_ROWS` of each image,
    # or more rows when an image has more).
    order = buckets.real_gts_first(candidate_less)  # candidate-less gts first

    def search(rows: int):
        def cheapest(pred_boxes, cls_logits, obj_logits, gt_boxes, gt_labels, order, less):
            take = lambda x: x[order[:rows]]
            inputs = prepare_inputs(
                pred_boxes,
                cls_logits,
                points,
                strides,
                take(gt_boxes),
                take(gt_labels),
                take(less),
                obj_logits,
            )
            none = jnp.zeros((rows, num_anchors), bool)
            relative = _relative_costs(inputs, none, none.any(axis=1), config)
            return needed_columns(none, relative, inputs.gt_mask, extra=config.extra_columns)

        images = (pred_boxes, cls_logits, obj_logits, gt_boxes, gt_labels, order, candidate_less)
        return lambda: kept | jax.vmap(cheapest)(*images)

    sizes = sorted({min(rows, num_gt) for rows in _CANDIDATE_LESS_SEARCHES} | {num_gt})
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


def _dense_costs(problem: _Problem, config: OTAConfig) -> tuple[Array, Array]:
    """`_shift_rows` of the costs on every anchor: the dense problem's."""
    valid = jnp.ones(problem.candidates.shape[1], bool)
    return _shift_rows(_costs(problem, config), valid, problem, config)


def _assign_image(
    *args, needed: Array | None, config: OTAConfig, columns: int | None
) -> Assignment:
    """One image's assignment, with the transport on ``columns`` kept anchors (the
    ``needed [A]`` ones) plus a folded column, or (``columns=None``) on every anchor."""
    num_anchors = args[2].shape[0]
    if columns is None:
        problem = _problem(*args, config=config)
        gt_mask = problem.inputs.gt_mask
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
        return make_assignment(
            gt_index, problem.inputs, k, transport if config.return_transport else None
        )

    # The compacted problem is the image's problem on the kept anchors.
    index, valid = kept_columns(needed, columns)
    kept_args = [x if x is None or i in (4, 5, 6) else x[index] for i, x in enumerate(args)]
    problem = _problem(*kept_args, config=config, valid=valid)
    inputs = problem.inputs
    k, supply = _supplies(inputs.ious, problem.candidates, inputs.gt_mask, num_anchors, config)
    cost, row_offset = _shift_rows(_costs(problem, config), valid, problem, config)
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
    # Decoded on the kept columns and one folded anchor, which holds exactly what
    # the dense plan holds there; the folded anchors are background.
    plan = per_anchor_plan(transport.plan, valid, num_anchors)
    kept_gt = _decode(plan, inputs.gt_mask)[:-1]
    kept_ious = jnp.take_along_axis(inputs.ious, jnp.maximum(kept_gt, 0)[None], axis=0)[0]
    at = jnp.where(valid, index, num_anchors)
    scatter = lambda fill, x: jnp.full(num_anchors, fill, x.dtype).at[at].set(x, mode="drop")
    if config.return_transport:  # dense, as the dense problem's
        full_cost, _ = _dense_costs(_problem(*args, config=config), config)
        transport = transport._replace(
            plan=expand_plan(plan, index, valid, num_anchors),
            cost=full_cost,
            demand=jnp.ones(num_anchors, jnp.float32),
        )
    return make_assignment(
        scatter(-1, kept_gt),
        inputs,
        k,
        transport if config.return_transport else None,
        anchor_ious=scatter(0.0, kept_ious),
    )


def _decode(plan: Array, gt_mask: Array) -> Array:
    """6. Scale each row of ``plan [M+1, K]`` to a maximum of 1; each column takes
    the best row: ``[K]`` gt index, -1 for background."""
    row_max = plan.max(axis=1, keepdims=True)
    usable = jnp.concatenate([gt_mask, jnp.ones(1, bool)])[:, None] & (row_max > 0)
    scores = jnp.where(usable, plan / jnp.where(row_max > 0, row_max, 1.0), -1.0)
    best = jnp.argmax(scores, axis=0)
    is_gt = (best < gt_mask.shape[0]) & (scores.max(axis=0) > 0)
    return jnp.where(is_gt, best, -1)


def _assign_real_gts(
    args: tuple, config: OTAConfig, *, needed: Array | None, columns: int | None = None
) -> Assignment:
    """The batch, its gts cut to a bucket, with the transport on ``columns`` kept
    anchors of ``needed [B, A]`` (``columns=None``: on every anchor)."""

    def one_image(*image):  # an image's eight assigner arguments, then its needed [A]
        return _assign_image(*image[:-1], needed=image[-1], config=config, columns=columns)

    in_axes = (0, 0, None, None, 0, 0, 0, 0, 0)
    return jax.vmap(one_image, in_axes=in_axes)(*args, needed)


def _assign_batch(args: tuple, config: OTAConfig) -> Assignment:
    """The anchors each image keeps first (`_needed_anchors`), then the transport at
    the gt and column buckets that hold the batch, chosen in one switch."""
    if config.max_columns is None or args[6].shape[1] == 0:  # always dense: nothing to keep
        run = partial(_assign_real_gts, config=config, needed=None)
        return buckets.by_real_gts(args, run, sizes=config.sizes)
    needed = _needed_anchors(args, config)
    run = partial(_assign_real_gts, config=config, needed=needed)
    columns = (needed.sum(axis=1).max(), config.max_columns)
    return buckets.by_real_gts(args, run, sizes=config.sizes, columns=columns)


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
