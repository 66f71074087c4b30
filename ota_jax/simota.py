"""SimOTA (YOLOX, Ge et al. 2021): OTA's cost and dynamic k, with per-gt top-k
in place of Sinkhorn. Batched, jitted and static-shape: the per-gt loop of the
reference becomes one ``lax.top_k`` with a static bound and a rank mask.
"""

from __future__ import annotations

from functools import partial
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from ota_jax._src import buckets
from ota_jax._src.compaction import take_rows, true_indices
from ota_jax._src.config import assigner_config
from ota_jax._src.inputs import (
    AssignArgs,
    AssignInputs,
    background_assignment,
    finite_cost,
    make_assignment,
    prepare_inputs,
    valid_gts,
)
from ota_jax._src.matching import Votes, dynamic_k, matching_votes, merge_votes, resolve_votes
from ota_jax._src.public import assign_batch, assign_one_image
from ota_jax.assignment import Assignment
from ota_jax.boxes import elementwise_iou
from ota_jax.costs import bce_background_cost, bce_class_cost
from ota_jax.priors import inside_boxes, inside_centre_regions

__all__ = ["SimOTAConfig", "simota_assign", "simota_assign_batch"]

Prior = Literal["center", "box_and_center"]


@assigner_config
class SimOTAConfig:
    """SimOTA hyperparameters; the defaults are YOLOX's since 2023.

    A pytree: the float fields are traced (changing them compiles nothing new),
    the others fix shapes or control flow.

    Attributes:
      center_radius: half-width of each gt's centre region, in strides (not clipped).
      prior: ``"center"``: anchors must lie in a gt's centre region (YOLOX 2023).
        ``"box_and_center"``: candidates lie in any gt box or centre region, a pair
        is allowed when the anchor is in that gt's box and its centre region (YOLOX
        2021, the ``yolox`` 0.3.0 package, mmdet; use ``center_radius=2.5``,
        ``penalty=1e5`` there).
      candidate_topk: q, the number of top IoUs summed for dynamic k; also the
        static bound on the labels one gt can take.
      iou_weight: weight of the ``-log(IoU + 1e-8)`` cost.
      penalty: cost added to pairs the prior does not allow.
      sizes: the static sizes it runs at: ``"auto"``, ``"cpu"``, ``"accelerator"``,
        ``"off"`` (one program at the padded size) or a `ota_jax.Sizes` (see
        `ota_jax.resolve_sizes`). SimOTA reads its ``tile`` (it runs in tiles, not
        size buckets), its ``max_pairs`` (smaller problems run whole) and its CPU
        chunking (for the whole problem).
    """

    center_radius: float = 1.5
    prior: Prior = "center"
    candidate_topk: int = 10
    iou_weight: float = 3.0
    penalty: float = 1e6
    sizes: str | buckets.Sizes = "auto"

    def __post_init__(self):
        if self.prior not in ("center", "box_and_center"):
            raise ValueError(f"prior must be 'center' or 'box_and_center', got {self.prior!r}")
        if self.candidate_topk < 1:
            raise ValueError("candidate_topk must be at least 1")
        if self.center_radius <= 0:
            raise ValueError("center_radius must be positive")


def _pair_geometry(points, strides, gt_boxes, gt_mask, config: SimOTAConfig):
    """``[M, A]`` pairs in the gt's prefilter region (the prefilter, `_prefilter_batch`,
    is their OR over gts), and ``[M, A]`` allowed pairs."""
    # A padded gt moves to infinity, where no anchor is inside its box or region:
    # cheaper than masking each of the M * A pairs.
    gt_boxes = jnp.where(gt_mask[:, None], gt_boxes, jnp.inf)
    in_centre = inside_centre_regions(points, strides, gt_boxes, config.center_radius)
    if config.prior == "center":
        return in_centre, in_centre
    in_box = inside_boxes(points, gt_boxes)
    return in_box | in_centre, in_box & in_centre


def _cost(part: AssignInputs, background: Array, config: SimOTAConfig) -> Array:
    """``[G, A]`` SimOTA's cost of the gts of ``part`` (cleaned inputs, a slice of gts)
    with its anchors, whose `bce_background_cost` is ``background [A]``: BCE of the
    class score against the one-hot label + iou_weight * -log IoU + the penalty off
    the prior, finite."""
    _, allowed = _pair_geometry(part.points, part.strides, part.gt_boxes, part.gt_mask, config)
    class_cost = bce_class_cost(
        part.cls_logits, part.obj_logits, part.gt_labels, background=background
    )
    return finite_cost(
        class_cost - config.iou_weight * jnp.log(part.ious + 1e-8) + config.penalty * (~allowed)
    )


def _assign_dense(args: AssignArgs, config: SimOTAConfig) -> Assignment:
    """The batch on all anchors at its padded size (``sizes="off"``, or a small problem)."""
    prefilter = _prefilter_args(args, config)
    num_images, num_gt = args.gt_mask.shape
    chunk = buckets.images_at_once(num_images, num_gt * args.points.shape[0], config.sizes)
    per_image = partial(_simota_one_image, config=config)
    dense = lambda boxes, logits, gts, labels, mask, obj, anchors: per_image(
        boxes, logits, args.points, args.strides, gts, labels, mask, obj, anchors
    )
    images = (args.pred_boxes, args.cls_logits, args.gt_boxes, args.gt_labels, args.gt_mask)
    return buckets.vmap_in_chunks(dense, chunk, *images, args.obj_logits, prefilter)


def _prefilter_batch(points, strides, gt_boxes, gt_mask, config: SimOTAConfig) -> Array:
    """``[B, A]`` prefiltered anchors of every image."""
    pairs = lambda boxes, mask: _pair_geometry(points, strides, boxes, mask, config)[0]
    return buckets.any_over_gts(jax.vmap(pairs), gt_boxes, gt_mask, config.sizes)


@jax.jit
def _assign_batch(args: AssignArgs, config: SimOTAConfig) -> Assignment:
    """The batch in tiles (`_assign_in_tiles`), or whole where its sizes say so."""
    num_images, num_gt = args.gt_mask.shape
    num_anchors = args.points.shape[0]
    if num_gt == 0:  # static: no gt slot, every anchor is background
        empty = background_assignment(num_anchors)
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_images, *x.shape)), empty)
    if buckets.unbucketed(config.sizes, num_gt, num_anchors):
        return _assign_dense(args, config)
    return _assign_in_tiles(args, config)


def _prefilter_args(args: AssignArgs, config: SimOTAConfig) -> Array:
    """`_prefilter_batch` of the batched assigner arguments, on the gts and float32
    values `prepare_inputs` leaves: each image's prefilter as `_simota_one_image`
    would find it, found once for the batch."""
    num_classes = args.cls_logits.shape[-1]
    valid = valid_gts(args.gt_boxes, args.gt_labels, args.gt_mask, num_classes)
    points, strides, gt_boxes = (
        jnp.asarray(x, jnp.float32) for x in (args.points, args.strides, args.gt_boxes)
    )
    return _prefilter_batch(points, strides, gt_boxes, valid, config)


def _simota_one_image(
    pred_boxes,
    cls_logits,
    points,
    strides,
    gt_boxes,
    gt_labels,
    gt_mask,
    obj_logits,
    prefilter,
    config: SimOTAConfig,
) -> Assignment:
    """One image; ``prefilter [A]`` marks its prefiltered anchors, the anchors in some
    gt's region (`_prefilter_args`; on gathered columns all but the padding).

    The gts are taken in slices when the image is too large for one step on a CPU
    (`buckets.gt_slices`): each gt's cost, dynamic k and choices depend on its own
    row only, and the conflicts' votes merge exactly (`merge_votes`). Whole, a large
    image's ``[M, A]`` arrays outgrow glibc's mmap threshold (see
    `buckets.images_at_once`; numbers in ``docs/performance_history.md``).
    """
    # Every gt, cleaned. Its [M, A] IoUs are used only when the gts are not sliced
    # (else they are dead code, and each slice computes its own).
    inputs = prepare_inputs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    num_gt, num_anchors = inputs.ious.shape
    topk = config.candidate_topk
    # The 80-class sum of the cost, which no gt changes, once for all slices.
    background = bce_background_cost(inputs.cls_logits, inputs.obj_logits)

    def votes_of(part: AssignInputs, first_gt):  # ``part``: the inputs with a slice of gts
        cost = _cost(part, background, config)
        # Each gt takes its k cheapest prefiltered anchors, conflicts to the cheapest gt.
        k = dynamic_k(part.ious, prefilter, part.gt_mask, topk=topk)
        return k, matching_votes(cost, k, prefilter, part.gt_mask, topk=topk, first_gt=first_gt)

    steps = buckets.gt_slices(num_gt, num_anchors, config.sizes)
    if steps == 1:
        k, votes = votes_of(inputs, 0)
        return make_assignment(resolve_votes(votes), inputs, k)

    def step(votes, part):
        boxes, labels, mask, first_gt = part
        part = prepare_inputs(
            inputs.pred_boxes, inputs.cls_logits, inputs.points, inputs.strides,
            boxes, labels, mask, inputs.obj_logits,
        )  # fmt: skip
        k, later = votes_of(part, first_gt)
        return merge_votes(votes, later), k

    slices = [
        buckets.split_gts(x, steps) for x in (inputs.gt_boxes, inputs.gt_labels, inputs.gt_mask)
    ]
    firsts = jnp.arange(steps, dtype=jnp.int32) * slices[0].shape[1]
    no_votes = Votes(
        times_chosen=jnp.zeros(num_anchors, jnp.int32),
        last_chooser=jnp.full(num_anchors, -1, jnp.int32),
        best_score=jnp.full(num_anchors, -jnp.inf),
        cheapest_gt=jnp.zeros(num_anchors, jnp.int32),  # argmax's answer when all are -inf
    )
    votes, ks = jax.lax.scan(step, no_votes, (*slices, firsts))
    return _assignment_of(resolve_votes(votes), inputs, ks.reshape(-1)[:num_gt])


def _assignment_of(gt_index: Array, inputs: AssignInputs, dynamic_k: Array) -> Assignment:
    """`make_assignment` where the ``[M, A]`` IoUs were never built whole (gt slices,
    tiles): each anchor's IoU with its gt, anew; ``inputs.ious`` is then dead code."""
    ious = elementwise_iou(inputs.gt_boxes[jnp.maximum(gt_index, 0)], inputs.pred_boxes)
    ious = jnp.where(jnp.isfinite(ious), ious, 0.0)
    return make_assignment(gt_index, inputs, dynamic_k, anchor_ious=ious)


# ------------------------------------------------------------ in tiles


class _Kept(NamedTuple):
    """What each gt keeps of the anchors seen so far in `_assign_in_tiles` (``[..., q]``)."""

    ious: Array  # float32: its q largest IoUs with prefiltered anchors, descending (0 fills)
    scores: Array  # float32: its q largest -cost, descending (-inf fills)
    anchors: Array  # int32: the anchors of those scores


def _keep_best(kept: _Kept, ious: Array, scores: Array, anchors: Array) -> _Kept:
    """``kept`` and a tile's ``ious``, ``scores`` ``[G, C]`` on ``anchors [C]`` (ascending,
    after every kept one): the q best of both. ``lax.top_k`` puts equal values in
    input order, so equal costs take the lower anchor, as on all anchors at once."""
    q = kept.scores.shape[-1]
    top_ious = jax.lax.top_k(ious, min(q, ious.shape[-1]))[0]
    top_scores, columns = jax.lax.top_k(scores, min(q, scores.shape[-1]))
    top_ious = jax.lax.top_k(jnp.concatenate([kept.ious, top_ious], -1), q)[0]
    top_scores, which = jax.lax.top_k(jnp.concatenate([kept.scores, top_scores], -1), q)
    anchors = jnp.concatenate([kept.anchors, anchors[columns]], -1)
    return _Kept(top_ious, top_scores, jnp.take_along_axis(anchors, which, -1))


def _tile_scores(
    columns: AssignArgs, in_use: Array, background: Array, config: SimOTAConfig
) -> tuple[Array, Array]:
    """One image's tile: ``columns``, its gathered anchors (``in_use [C]``, their
    ``background [C]`` cost) with a slice of G gts. Returns ``[G, C]`` IoUs (0 off
    ``in_use``) and scores, -cost (-inf off ``in_use`` and for invalid gts)."""
    part = prepare_inputs(*columns)
    cost = _cost(part, background, config)
    ious = jnp.where(in_use, part.ious, 0.0)
    return ious, jnp.where(in_use & part.gt_mask[:, None], -cost, -jnp.inf)


def _assign_in_tiles(args: AssignArgs, config: SimOTAConfig) -> Assignment:
    """The batch in tiles of ``config.sizes.tile`` (gts, prefiltered anchors), in a loop
    as long as the batch needs: one compiled program, whatever the batch's sizes.

    Each gt's cost, dynamic k and choices depend on its own row, and its q best IoUs
    and costs merge exactly from tile to tile (`_keep_best`); each anchor's cheapest
    gt merges as the votes of gt slices do (`merge_votes`). The valid gts come first,
    in order, the prefiltered anchors are gathered in anchor order, and the tiles run
    column by column, so every tie is broken as on the whole padded problem. The
    first tile runs outside the loop: most batches need no other, and XLA:CPU runs
    the same tile about 3x slower inside a loop (docs/performance_history.md).
    """
    gts_per_tile, columns_per_tile = config.sizes.tile
    num_gt = args.gt_mask.shape[1]
    num_anchors = args.points.shape[0]
    q = config.candidate_topk
    valid = valid_gts(args.gt_boxes, args.gt_labels, args.gt_mask, args.cls_logits.shape[-1])

    # Gts: the valid ones first, padded with invalid slots to whole tiles.
    order = buckets.real_gts_first(valid)
    padded_gts = -(-num_gt // gts_per_tile) * gts_per_tile
    pad_gts = lambda x: jnp.pad(x, [(0, 0), (0, padded_gts - num_gt)] + [(0, 0)] * (x.ndim - 2))
    gt_boxes, gt_labels, gt_valid = (
        pad_gts(buckets.take_gt_rows(x, order, num_gt))
        for x in (jnp.asarray(args.gt_boxes, jnp.float32), args.gt_labels, valid)
    )
    gt_boxes = jnp.where(gt_valid[..., None], gt_boxes, 0.0)
    gt_steps = -(-valid.sum(axis=1).max() // gts_per_tile)
    gts_at = lambda x, step: jax.lax.dynamic_slice_in_dim(x, step * gts_per_tile, gts_per_tile, 1)

    # Anchors: each image's prefiltered ones, the OR of every valid gt's region.
    points, strides = (jnp.asarray(x, jnp.float32) for x in (args.points, args.strides))

    def prefilter_step(step, found):
        boxes, mask = gts_at(gt_boxes, step), gts_at(gt_valid, step)
        return found | _prefilter_batch(points, strides, boxes, mask, config)

    nowhere = jnp.zeros_like(args.pred_boxes[..., 0], bool)  # [B, A], sharded as the batch
    prefilter = jax.lax.fori_loop(1, gt_steps, prefilter_step, prefilter_step(0, nowhere))
    column_steps = -(-prefilter.sum(axis=1).max() // columns_per_tile)
    anchor_axes = args.image_axes()._replace(gt_boxes=None, gt_labels=None, gt_mask=None)
    tile_axes = anchor_axes._replace(points=0, strides=0, gt_boxes=0, gt_labels=0, gt_mask=0)
    take = lambda x, at: None if x is None else take_rows(x, at, mode="clip")

    def tile_step(step, carry):
        """Tile ``step``: gt slice ``step % gt_steps`` with column slice ``step // gt_steps``."""
        kept, best_score, cheapest_gt = carry
        gt_step, column_step = jnp.divmod(step, jnp.maximum(gt_steps, 1))[::-1]
        # The tile's anchors: the prefiltered ones of rank column_step * C, ...
        find = partial(
            true_indices,
            size=columns_per_tile,
            fill_value=num_anchors,
            skip=column_step * columns_per_tile,
        )
        at = jax.vmap(find)(prefilter)
        anchors = args._replace(gt_boxes=None, gt_labels=None, gt_mask=None)
        columns = jax.vmap(
            lambda image, at: AssignArgs(*(take(x, at) for x in image)), in_axes=(anchor_axes, 0)
        )(anchors, at)
        background = jax.vmap(bce_background_cost)(
            jnp.asarray(columns.cls_logits, jnp.float32),
            None if columns.obj_logits is None else jnp.asarray(columns.obj_logits, jnp.float32),
        )
        columns = columns.with_gts(*(gts_at(x, gt_step) for x in (gt_boxes, gt_labels, gt_valid)))
        ious, scores = jax.vmap(partial(_tile_scores, config=config), in_axes=(tile_axes, 0, 0))(
            columns, at < num_anchors, background
        )
        # Each gt's q best so far; the tile's columns follow every kept one.
        rows = jax.vmap(_keep_best)(
            jax.tree.map(partial(gts_at, step=gt_step), kept), ious, scores, at
        )
        kept = jax.tree.map(
            lambda x, r: jax.lax.dynamic_update_slice_in_dim(x, r, gt_step * gts_per_tile, 1),
            kept,
            rows,
        )
        # Each anchor's cheapest valid gt; a tie keeps the earlier gt (`merge_votes`).
        tile_best = scores.max(axis=1)
        tile_gt = gt_step * gts_per_tile + jnp.argmax(scores, axis=1).astype(jnp.int32)

        def merge(best, cheapest, at, tile_best, tile_gt):
            later_wins = tile_best > best.at[at].get(mode="clip")
            best = best.at[at].max(tile_best, mode="drop")
            return best, cheapest.at[at].set(
                jnp.where(later_wins, tile_gt, cheapest[at]), mode="drop"
            )

        best_score, cheapest_gt = jax.vmap(merge)(best_score, cheapest_gt, at, tile_best, tile_gt)
        return kept, best_score, cheapest_gt

    per_gt = jnp.zeros_like(gt_valid, jnp.float32)[..., None] + jnp.zeros(q)  # [B, M', q]
    nothing = _Kept(per_gt, per_gt - jnp.inf, per_gt.astype(jnp.int32))
    start = (
        nothing,
        jnp.full_like(nowhere, -jnp.inf, jnp.float32),
        jnp.zeros_like(nowhere, jnp.int32),
    )
    first = tile_step(0, start)  # harmless where there is no gt or no anchor
    steps = gt_steps * column_steps
    kept, best_score, cheapest_gt = jax.lax.fori_loop(1, steps, tile_step, first)

    # Each gt takes its k cheapest anchors; an anchor taken by several, the cheapest gt.
    k = dynamic_k(kept.ious, True, gt_valid, topk=q)  # the q kept are the q largest
    chosen = (jnp.arange(q) < k[..., None]) & (kept.scores > -jnp.inf)

    def one_image(anchors, chosen, best_score, cheapest_gt, k, order, image):
        choosers = jnp.broadcast_to(jnp.arange(padded_gts, dtype=jnp.int32)[:, None], chosen.shape)
        times = jnp.zeros(num_anchors, jnp.int32).at[anchors].add(chosen.astype(jnp.int32))
        last = jnp.full(num_anchors, -1, jnp.int32).at[anchors].max(jnp.where(chosen, choosers, -1))
        gt = resolve_votes(Votes(times, last, best_score, cheapest_gt))
        gt = jnp.where(gt >= 0, order[jnp.clip(gt, 0, num_gt - 1)], -1)
        return _assignment_of(
            gt, prepare_inputs(*image), buckets.scatter_gt_rows(k[:num_gt], order, num_gt)
        )

    in_axes = (0, 0, 0, 0, 0, 0, args.image_axes())
    return jax.vmap(one_image, in_axes=in_axes)(
        kept.anchors, chosen, best_score, cheapest_gt, k, order, args
    )


# ------------------------------------------------------------ public


def simota_assign(
    pred_boxes: ArrayLike,
    cls_logits: ArrayLike,
    points: ArrayLike,
    strides: ArrayLike,
    gt_boxes: ArrayLike,
    gt_labels: ArrayLike,
    gt_mask: ArrayLike,
    *,
    obj_logits: ArrayLike | None = None,
    config: SimOTAConfig = SimOTAConfig(),
) -> Assignment:
    """SimOTA label assignment for one image, as YOLOX's ``get_assignments``.

    Args:
      pred_boxes: ``[A, 4]`` predicted boxes, xyxy pixels.
      cls_logits: ``[A, C]`` class logits.
      points: ``[A, 2]`` anchor point centres ``(x, y)`` in pixels.
      strides: ``[A]`` stride of each anchor's FPN level.
      gt_boxes: ``[M, 4]`` gt boxes, xyxy pixels; M may be 0.
      gt_labels: ``[M]`` int gt classes in ``[0, C)``.
      gt_mask: ``[M]`` bool, True for real gts, False for padding.
      obj_logits: optional ``[A]`` objectness logits; the class score becomes
        ``sqrt(sigmoid(cls) * sigmoid(obj))`` as in YOLOX.
      config: a `SimOTAConfig`; its float fields are traced (a sweep compiles once).

    Returns:
      An `Assignment` (``transport`` is None). All arithmetic is float32 under
      ``stop_gradient``. Invalid gts (padded; empty, inverted or non-finite box;
      label out of range) are ignored, and non-finite predictions never produce
      NaN. An image without gts or anchors, or whose gts have no anchor in their
      regions, is all background (the reference crashes on the latter).

    Raises:
      ValueError, TypeError: arguments whose shapes or dtypes do not fit, or a
        config of another class; the message names them.
    """
    args = AssignArgs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    return assign_one_image(_assign_batch, args, config, SimOTAConfig, "simota_assign")


def simota_assign_batch(
    pred_boxes: ArrayLike,
    cls_logits: ArrayLike,
    points: ArrayLike,
    strides: ArrayLike,
    gt_boxes: ArrayLike,
    gt_labels: ArrayLike,
    gt_mask: ArrayLike,
    *,
    obj_logits: ArrayLike | None = None,
    config: SimOTAConfig = SimOTAConfig(),
) -> Assignment:
    """SimOTA label assignment for a batch of images, all at once.

    Args:
      pred_boxes: ``[B, A, 4]`` predicted boxes, xyxy pixels.
      cls_logits: ``[B, A, C]`` class logits.
      points: ``[A, 2]`` anchor point centres ``(x, y)`` in pixels, shared by all images.
      strides: ``[A]`` stride of each anchor's FPN level, shared by all images.
      gt_boxes: ``[B, M, 4]`` gt boxes, xyxy pixels, padded to a common M (may be 0).
      gt_labels: ``[B, M]`` int gt classes in ``[0, C)``.
      gt_mask: ``[B, M]`` bool, True for real gts, False for padding; padding never
        changes a result.
      obj_logits: optional ``[B, A]`` objectness logits, as for `simota_assign`.
      config: a `SimOTAConfig`; its float fields are traced (a sweep compiles once).

    Returns:
      An `Assignment` with a leading ``[B]`` on every field, each image's as
      `simota_assign` gives it. A batch of no images (``B == 0``) gives every field
      with 0 images.

    Raises:
      ValueError, TypeError: as `simota_assign`; a shape error lists every batched shape.
    """
    args = AssignArgs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    return assign_batch(_assign_batch, args, config, SimOTAConfig, "simota_assign_batch")
