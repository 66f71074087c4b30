"""OTA: Optimal Transport Assignment (Ge et al., CVPR 2021), batched and jitted.

Label assignment as optimal transport, in five steps per image:

1. **Candidates** ``[M, A]``: anchors inside the gt box and its centre region.
2. **Costs** ``[M+1, A]``: focal loss of the class logits plus ``reg_weight * -log
   IoU`` for each gt (a large penalty off its candidates), focal loss against
   all-zero targets for the background row.
3. **Supplies** ``[M+1]``: each gt supplies its dynamic k labels, the background
   the rest; every anchor demands one.
4. **Transport**: entropic OT with ott-jax's Sinkhorn (`ota_jax.solve_transport`).
5. **Decode**: each anchor takes the supplier that ships it the most, relative to
   that supplier's largest shipment.

This reproduces the official implementation's assignments (``ASSIGNERS.md``)
without its per-image loop or its ``[M, A, C]`` cost tensor. A batch runs
every image at once on the anchors that matter (`ota_jax._src.compaction`:
exact) and at the smallest gt and column sizes that hold it
(`ota_jax._src.buckets`).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Literal, get_args

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from ota_jax._src import buckets
from ota_jax._src.compaction import (
    expand_plan,
    kept_columns,
    needed_columns,
    per_anchor_plan,
    smallest_indices,
    solve_compacted,
    take_rows,
)
from ota_jax._src.config import assigner_config
from ota_jax._src.inputs import (
    NONFINITE_COST,
    AssignArgs,
    AssignInputs,
    finite_cost,
    make_assignment,
    prepare_inputs,
    valid_gts,
)
from ota_jax._src.matching import dynamic_k
from ota_jax._src.public import assign_batch, assign_one_image
from ota_jax.assignment import Assignment
from ota_jax.costs import focal_loss_negative, focal_relative_cost, joint_logits
from ota_jax.priors import inside_boxes, inside_centre_regions
from ota_jax.transport import solve_transport

__all__ = ["OTAConfig", "ota_assign", "ota_assign_batch"]


# OTAConfig.prior's candidate rules, the official one first.
Prior = Literal["box_and_clipped_center", "center"]


@assigner_config
class OTAConfig:
    """OTA hyperparameters; the defaults are the official code's.

    A pytree: the float fields are traced (changing them compiles nothing new),
    the others fix shapes or control flow.

    Attributes:
      center_radius: half-width of the centre region, in strides.
      prior: the candidate rule. ``"box_and_clipped_center"`` (the official code's):
        the anchor lies inside the gt box and inside its centre region clipped to the
        box. ``"center"`` (opt-in, SimOTA's centre prior, not OTA's): the anchor lies
        inside the unclipped centre region, in the box or not; a gt smaller than a few
        strides then has several candidates instead of about one, so dynamic k can
        give it more than one positive (see ``docs/study.md``).
      candidate_topk: q, the number of top IoUs summed for dynamic k.
      reg_weight: weight of the ``-log IoU`` regression cost.
      epsilon: absolute entropic regularisation of Sinkhorn.
      num_iters: Sinkhorn iterations, all of them run (no early stop).
      focal_alpha: focal loss weight of the classification cost.
      focal_gamma: focal loss exponent (static: an integral one is computed by
        multiplication, as the official code's ``pow``).
      penalty: cost added where the anchor is not a candidate of the gt.
      iou_eps: IoUs are clamped at this value below before the log.
      in_box_margin: an anchor is inside a gt box when all four distances exceed it.
      max_columns: solve the transport on at most this many anchors, the candidates
        of some gt plus ``extra_columns`` cheapest anchors of each gt without
        candidates, all other anchors folded into one background-only column (see
        `ota_jax._src.compaction`; same assignments, much less work). When an image
        of the batch needs more columns, the whole batch falls back to the dense
        problem. ``None``: always dense.
      extra_columns: anchors kept for each gt without any candidate.
      return_transport: also return the cost, plan and marginal errors.
      sizes: the static sizes it runs at: ``"auto"``, ``"cpu"``, ``"accelerator"``,
        ``"off"`` (one program at the padded size) or a `ota_jax.Sizes` (see
        `ota_jax.resolve_sizes`).
    """

    center_radius: float = 2.5
    prior: Prior = "box_and_clipped_center"
    candidate_topk: int = 20
    reg_weight: float = 1.5
    epsilon: float = 0.1
    num_iters: int = 50
    focal_alpha: float = 0.25
    focal_gamma: float = dataclasses.field(default=2.0, metadata={"static": True})
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
        if self.prior not in get_args(Prior):
            raise ValueError(f"prior must be one of {get_args(Prior)}, got {self.prior!r}")


# ------------------------------------------------------------ the five steps


def _candidates(points, strides, gt_boxes, gt_mask, config: OTAConfig) -> Array:
    """Step 1, ``[M, A]`` candidate pairs (``OTAConfig.prior``): by default inside the
    box and its clipped centre region."""
    if config.prior == "center":
        centre = inside_centre_regions(points, strides, gt_boxes, config.center_radius)
        return centre & gt_mask[:, None]
    return (
        inside_boxes(points, gt_boxes, margin=config.in_box_margin)
        & inside_centre_regions(points, strides, gt_boxes, config.center_radius, clip_to_box=True)
        & gt_mask[:, None]
    )


def _eligible(candidates: Array, relative: Array, valid: Array, config: OTAConfig) -> Array:
    """Step 1 completed, ``[M, K]``: the anchors each gt may win. Its candidates; for a
    gt without any (a box between anchor centres), its ``extra_columns`` anchors of
    lowest cost relative to the background (`_relative_costs`; ties to the lower
    anchor), the ones the compacted problem keeps for it, and only where that cost is
    finite: with NaN predictions its row of the plan is flat, and it would take
    every anchor it reaches.
    """
    num_gt, num_anchors = candidates.shape
    count = min(config.extra_columns, num_anchors)
    if count == 0:
        return candidates
    cheapest = smallest_indices(jnp.where(valid[None, :], relative, jnp.inf), count)
    near = jnp.zeros_like(candidates).at[jnp.arange(num_gt)[:, None], cheapest].set(True)
    near = near & valid[None, :] & (relative < NONFINITE_COST)
    return jnp.where(candidates.any(axis=1)[:, None], candidates, near)


def _relative_costs(
    inputs: AssignInputs, candidates: Array, has_candidate: Array, config: OTAConfig
) -> Array:
    """Step 2 for the gt rows, ``[M, K]``: each gt's cost minus the background's on the
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


def _costs(
    inputs: AssignInputs, candidates: Array, valid: Array, config: OTAConfig
) -> tuple[Array, Array, Array]:
    """Step 2, ``[M+1, K]`` costs on the ``valid [K]`` anchors of ``inputs``, background
    row (focal loss against all-zero targets) last, each gt row shifted by its
    minimum; the ``[M+1]`` row offsets `solve_transport` needs (`_shift_rows`); and
    the ``[M, K]`` relative costs (`_relative_costs`). ``candidates [M, K]`` must hold
    every candidate of the image."""
    has_candidate = candidates.any(axis=1)
    logits = joint_logits(inputs.cls_logits, inputs.obj_logits)
    background_cost = finite_cost(
        focal_loss_negative(logits, alpha=config.focal_alpha, gamma=config.focal_gamma).sum(-1)
    )
    relative = _relative_costs(inputs, candidates, has_candidate, config)
    gt_cost = finite_cost(relative + background_cost[None, :])
    gt_cost = jnp.where(inputs.gt_mask[:, None], gt_cost, 0.0)
    cost = jnp.concatenate([gt_cost, background_cost[None]])
    return *_shift_rows(cost, valid, inputs.gt_mask, has_candidate, config), relative


def _shift_rows(
    cost: Array, valid: Array, gt_mask: Array, has_candidate: Array, config: OTAConfig
) -> tuple[Array, Array]:
    """Each gt row of ``cost [M+1, K]`` minus its minimum over the ``valid [K]``
    columns, and the ``row_offset [M+1]`` that tells `solve_transport` so.

    A per-row constant changes neither the optimum nor (with the row potential
    started at minus that constant) any Sinkhorn iterate; the offset also holds the
    penalty left out of candidate-less gts' rows. Numerically the rows stay
    well-scaled instead of holding values near 1e6.
    """
    gt_cost = cost[:-1]
    row_min = gt_cost.min(axis=1, initial=jnp.inf, where=gt_mask[:, None] & valid[None, :])
    row_min = jnp.where(gt_mask & jnp.isfinite(row_min), row_min, 0.0)
    gt_cost = jnp.where(gt_mask[:, None], gt_cost - row_min[:, None], 0.0)
    penalty_offset = config.penalty * (gt_mask & ~has_candidate)  # left out of the row
    row_offset = jnp.concatenate([row_min + penalty_offset, jnp.zeros(1)])
    return jnp.concatenate([gt_cost, cost[-1:]]), row_offset


def _supplies(
    ious: Array, candidates: Array, gt_mask: Array, num_anchors: int, config: OTAConfig
) -> tuple[Array, Array]:
    """Step 3: ``[M]`` dynamic k of each gt and the ``[M+1]`` supplies (k per gt, the
    rest of the ``num_anchors`` units to the background), from the ``ious [M, K]``
    and ``candidates [M, K]`` of K columns that hold every candidate (the top-q IoUs
    over the candidates are the same there as on all anchors, and cheaper to find)."""
    k = dynamic_k(ious, candidates, gt_mask, topk=config.candidate_topk)
    background = jnp.maximum(num_anchors - k.sum(), 0)
    return k, jnp.concatenate([k, background[None]]).astype(jnp.float32)


def _decode(plan: Array, gt_mask: Array, eligible: Array) -> Array:
    """Step 5: scale each row of ``plan [M+1, K]`` to a maximum of 1; each column takes
    the best row among the background and the gts it is ``eligible [M, K]`` for:
    ``[K]`` gt index, -1 for background."""
    row_max = plan.max(axis=1, keepdims=True)
    allowed = jnp.concatenate([eligible & gt_mask[:, None], jnp.ones_like(eligible[:1])])
    usable = allowed & (row_max > 0)
    scores = jnp.where(usable, plan / jnp.where(row_max > 0, row_max, 1.0), -1.0)
    best = jnp.argmax(scores, axis=0)
    is_gt = (best < gt_mask.shape[0]) & (scores.max(axis=0) > 0)
    return jnp.where(is_gt, best, -1)


# ------------------------------------------------------------ one image


def _dense_problem(image: AssignArgs, config: OTAConfig):
    """Steps 1-2 on every anchor: the cleaned inputs, candidates, eligible pairs,
    costs and row offsets."""
    inputs = prepare_inputs(*image)
    candidates = _candidates(inputs.points, inputs.strides, inputs.gt_boxes, inputs.gt_mask, config)
    every_anchor = jnp.ones(image.points.shape[0], bool)
    cost, row_offset, relative = _costs(inputs, candidates, every_anchor, config)
    eligible = _eligible(candidates, relative, every_anchor, config)
    return inputs, candidates, eligible, cost, row_offset


def _assign_dense(image: AssignArgs, config: OTAConfig) -> Assignment:
    """One image's assignment with the transport on every anchor."""
    num_anchors = image.points.shape[0]
    inputs, candidates, eligible, cost, row_offset = _dense_problem(image, config)
    k, supply = _supplies(inputs.ious, candidates, inputs.gt_mask, num_anchors, config)
    transport = solve_transport(
        cost,
        supply,
        jnp.ones(num_anchors),
        epsilon=config.epsilon,
        num_iters=config.num_iters,
        row_offset=row_offset,
    )
    gt_index = _decode(transport.plan, inputs.gt_mask, eligible)
    return make_assignment(gt_index, inputs, k, transport if config.return_transport else None)


def _assign_compacted(
    image: AssignArgs, needed: Array, config: OTAConfig, columns: int
) -> Assignment:
    """One image's assignment with the transport on ``columns`` kept anchors (its
    ``needed [A]`` ones, padded) and one folded column for all the others."""
    num_anchors = image.points.shape[0]
    index, valid = kept_columns(needed, columns)
    take = lambda x: None if x is None else take_rows(x, index)
    kept = image._replace(
        pred_boxes=take(image.pred_boxes),
        cls_logits=take(image.cls_logits),
        points=take(image.points),
        strides=take(image.strides),
        obj_logits=take(image.obj_logits),
    )
    inputs = prepare_inputs(*kept)
    # The kept columns hold every candidate anchor: has_candidate is as on all anchors.
    candidates = (
        _candidates(inputs.points, inputs.strides, inputs.gt_boxes, inputs.gt_mask, config)
        & valid[None, :]
    )
    cost, row_offset, relative = _costs(inputs, candidates, valid, config)
    eligible = _eligible(candidates, relative, valid, config)
    k, supply = _supplies(inputs.ious, candidates, inputs.gt_mask, num_anchors, config)
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
    # The folded anchor is no gt's candidate, nor among any gt's cheapest anchors.
    eligible = jnp.concatenate([eligible, jnp.zeros_like(eligible[:, :1])], axis=1)
    kept_gt = _decode(plan, inputs.gt_mask, eligible)[:-1]
    kept_ious = jnp.take_along_axis(inputs.ious, jnp.maximum(kept_gt, 0)[None], axis=0)[0]
    at = jnp.where(valid, index, num_anchors)
    scatter = lambda fill, x: jnp.full(num_anchors, fill, x.dtype).at[at].set(x, mode="drop")
    if config.return_transport:  # dense, as the dense problem's
        *_, dense_cost, _ = _dense_problem(image, config)
        transport = transport._replace(
            plan=expand_plan(plan, index, valid, num_anchors),
            cost=dense_cost,
            demand=jnp.ones(num_anchors, jnp.float32),
        )
    return make_assignment(
        scatter(-1, kept_gt),
        inputs,
        k,
        transport if config.return_transport else None,
        anchor_ious=scatter(0.0, kept_ious),
    )


# ------------------------------------------------------------ the batch


# Gts without candidates whose cheapest anchors an image searches for on their own
# rows; an image with more searches with 16 rows, or every gt row.
_CANDIDATE_LESS_ROWS = 4
_CANDIDATE_LESS_SEARCHES = (_CANDIDATE_LESS_ROWS, 16)


def _needed_anchors(args: AssignArgs, config: OTAConfig) -> Array:
    """``[B, A]`` the anchors each image's compacted problem keeps (`needed_columns`):
    the candidates of every gt, and the ``extra_columns`` cheapest anchors of each gt
    without candidates. Found before the transport's sizes are chosen, so that the
    transport is built on the kept anchors only and its gt and column sizes are
    chosen in one switch (`buckets.by_real_gts`)."""
    num_gt = args.gt_mask.shape[1]
    find = partial(_candidates_at_real_gts, num_gt=num_gt, config=config)
    kept, candidate_less = buckets.on_real_gts(args, find, sizes=config.sizes)
    if config.extra_columns == 0:
        return kept
    # The search below runs once, outside the gt sizes' switch: compiled once, not
    # once per gt size. Its gts are in `candidate_less`'s order, real gts first.
    order = buckets.real_gts_first(args.gt_mask)
    gt_boxes, gt_labels = (
        buckets.take_gt_rows(x, order, num_gt) for x in (args.gt_boxes, args.gt_labels)
    )
    return _with_cheapest(args, kept, candidate_less, gt_boxes, gt_labels, config)


def _candidates_at_real_gts(
    args: AssignArgs, num_gt: int, config: OTAConfig
) -> tuple[Array, Array]:
    """The batch ``args``, its gts cut to R: ``[B, A]`` anchors that are some gt's
    candidate, and ``[B, num_gt]`` the real gts without any candidate (the R cut
    slots, then False)."""
    num_classes = args.cls_logits.shape[-1]
    valid = valid_gts(args.gt_boxes, args.gt_labels, args.gt_mask, num_classes)
    gt_boxes = jnp.where(valid[..., None], args.gt_boxes, 0.0)
    candidates = jax.vmap(partial(_candidates, config=config), in_axes=(None, None, 0, 0))(
        args.points, args.strides, gt_boxes, valid
    )
    candidate_less = valid & ~candidates.any(axis=2)  # [B, R]
    rows = candidate_less.shape[1]
    return candidates.any(axis=1), jnp.pad(candidate_less, ((0, 0), (0, num_gt - rows)))


def _with_cheapest(
    args: AssignArgs, kept: Array, candidate_less: Array, gt_boxes, gt_labels, config: OTAConfig
) -> Array:
    """``kept [B, A]`` and the ``extra_columns`` cheapest anchors of each gt of
    ``candidate_less [B, M]`` (with its ``gt_boxes``, ``gt_labels``)."""
    num_gt, num_anchors = candidate_less.shape[1], args.points.shape[0]

    # The search for the cheapest anchors of gts without candidates is the only part
    # of OTA that needs costs on every anchor. It runs only when the batch has such a
    # gt, and only on those gts' rows (the first `_CANDIDATE_LESS_ROWS` of each image,
    # or more rows when an image has more).
    order = buckets.real_gts_first(candidate_less)  # candidate-less gts first

    def search(rows: int):
        def cheapest(image: AssignArgs, order: Array) -> Array:
            take = lambda x: x[order[:rows]]
            image = image.with_gts(
                *(take(x) for x in (image.gt_boxes, image.gt_labels, image.gt_mask))
            )
            inputs = prepare_inputs(*image)
            none = jnp.zeros((rows, num_anchors), bool)
            relative = _relative_costs(inputs, none, none.any(axis=1), config)
            return needed_columns(none, relative, inputs.gt_mask, extra=config.extra_columns)

        images = args.with_gts(gt_boxes, gt_labels, candidate_less)
        per_image = jax.vmap(cheapest, in_axes=(args.image_axes(), 0))
        return lambda: kept | per_image(images, order)

    sizes = sorted({min(rows, num_gt) for rows in _CANDIDATE_LESS_SEARCHES} | {num_gt})
    most = candidate_less.sum(axis=1).max()
    index = jnp.where(most == 0, 0, 1 + buckets.bucket_index([most], [sizes]))
    return buckets.switch(index, [lambda: kept, *(search(rows) for rows in sizes)])


def _assign_real_gts(
    args: AssignArgs, config: OTAConfig, *, needed: Array | None, columns: int | None = None
) -> Assignment:
    """The batch, its gts cut to a bucket, with the transport on ``columns`` kept
    anchors of ``needed [B, A]`` (``columns=None``: on every anchor)."""
    if columns is None:
        return jax.vmap(partial(_assign_dense, config=config), in_axes=(args.image_axes(),))(args)
    one_image = partial(_assign_compacted, config=config, columns=columns)
    return jax.vmap(one_image, in_axes=(args.image_axes(), 0))(args, needed)


@jax.jit
def _assign_batch(args: AssignArgs, config: OTAConfig) -> Assignment:
    """The anchors each image keeps first (`_needed_anchors`), then the transport at
    the gt and column sizes that hold the batch, chosen in one switch."""
    if config.max_columns is None or args.gt_mask.shape[1] == 0:  # always dense
        run = partial(_assign_real_gts, config=config, needed=None)
        return buckets.by_real_gts(args, run, sizes=config.sizes)
    needed = _needed_anchors(args, config)
    run = partial(_assign_real_gts, config=config, needed=needed)
    columns = (needed.sum(axis=1).max(), config.max_columns)
    return buckets.by_real_gts(args, run, sizes=config.sizes, columns=columns)


# ------------------------------------------------------------ public


def ota_assign(
    pred_boxes: ArrayLike,
    cls_logits: ArrayLike,
    points: ArrayLike,
    strides: ArrayLike,
    gt_boxes: ArrayLike,
    gt_labels: ArrayLike,
    gt_mask: ArrayLike,
    *,
    obj_logits: ArrayLike | None = None,
    config: OTAConfig = OTAConfig(),
) -> Assignment:
    """OTA label assignment for one image.

    Args:
      pred_boxes: ``[A, 4]`` predicted boxes, xyxy pixels.
      cls_logits: ``[A, C]`` class logits.
      points: ``[A, 2]`` anchor point centres ``(x, y)`` in pixels.
      strides: ``[A]`` stride of each anchor's FPN level.
      gt_boxes: ``[M, 4]`` gt boxes, xyxy pixels; M may be 0.
      gt_labels: ``[M]`` int gt classes in ``[0, C)``.
      gt_mask: ``[M]`` bool, True for real gts, False for padding.
      obj_logits: optional ``[A]`` objectness logits (YOLOX-style heads); the class
        probability in the focal cost becomes ``sqrt(sigmoid(cls) * sigmoid(obj))``.
      config: an `OTAConfig`; its float fields are traced (a sweep compiles once).

    Returns:
      An `Assignment`. All arithmetic is float32 under ``stop_gradient``.

      Gts that are padded, or whose box is empty, inverted or non-finite, or whose
      label is out of range, are ignored; an image without gts or without anchors
      is all background. NaN/inf predictions never produce NaN: such pairs get a
      very large cost and an IoU of 0. A gt with no candidate anchor (a box smaller
      than the stride, between anchor centres) still ships its ``k`` labels, to the
      anchors where its cost is lowest relative to the background, as in the
      official code; here that part of the plan is computed to float32 precision
      instead of being float32 rounding noise around 1e6.

    Raises:
      ValueError, TypeError: arguments whose shapes or dtypes do not fit, or a
        config of another class; the message names them.
    """
    args = AssignArgs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    return assign_one_image(_assign_batch, args, config, OTAConfig, "ota_assign")


def ota_assign_batch(
    pred_boxes: ArrayLike,
    cls_logits: ArrayLike,
    points: ArrayLike,
    strides: ArrayLike,
    gt_boxes: ArrayLike,
    gt_labels: ArrayLike,
    gt_mask: ArrayLike,
    *,
    obj_logits: ArrayLike | None = None,
    config: OTAConfig = OTAConfig(),
) -> Assignment:
    """OTA label assignment for a batch of images, all at once.

    Args:
      pred_boxes: ``[B, A, 4]`` predicted boxes, xyxy pixels.
      cls_logits: ``[B, A, C]`` class logits.
      points: ``[A, 2]`` anchor point centres ``(x, y)`` in pixels, shared by all images.
      strides: ``[A]`` stride of each anchor's FPN level, shared by all images.
      gt_boxes: ``[B, M, 4]`` gt boxes, xyxy pixels, padded to a common M (may be 0).
      gt_labels: ``[B, M]`` int gt classes in ``[0, C)``.
      gt_mask: ``[B, M]`` bool, True for real gts, False for padding; padding never
        changes a result.
      obj_logits: optional ``[B, A]`` objectness logits, as for `ota_assign`.
      config: an `OTAConfig`; its float fields are traced (a sweep compiles once).

    Returns:
      An `Assignment` with a leading ``[B]`` on every field, each image's as
      `ota_assign` gives it. A batch of no images (``B == 0``) gives every field
      with 0 images.

    Raises:
      ValueError, TypeError: as `ota_assign`; a shape error lists every batched shape.
    """
    args = AssignArgs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    return assign_batch(_assign_batch, args, config, OTAConfig, "ota_assign_batch")
