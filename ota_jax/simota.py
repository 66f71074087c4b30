"""SimOTA (YOLOX, Ge et al. 2021): OTA's cost and dynamic k, with per-gt top-k
in place of Sinkhorn. Batched, jitted and static-shape: the per-gt loop of the
reference becomes one ``lax.top_k`` with a static bound and a rank mask.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

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
        `ota_jax.resolve_sizes`).
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


def _assign_at_size(
    args: AssignArgs, config: SimOTAConfig, *, prefilter: Array | None, columns: int | None
) -> Assignment:
    """The batch on each image's ``columns`` prefiltered anchors (None: all anchors);
    ``prefilter [B, A]`` marks them (None: no gt slot, nothing to prefilter)."""
    points = args.points
    num_anchors = points.shape[0]
    num_images, num_gt = args.gt_mask.shape
    chunk = buckets.images_at_once(num_images, num_gt * (columns or num_anchors), config.sizes)
    per_image = partial(_simota_one_image, config=config)
    images = (args.pred_boxes, args.cls_logits, args.gt_boxes, args.gt_labels, args.gt_mask)
    if columns is None:
        dense = lambda boxes, logits, gts, labels, mask, obj, anchors: per_image(
            boxes, logits, points, args.strides, gts, labels, mask, obj, anchors
        )
        return buckets.vmap_in_chunks(dense, chunk, *images, args.obj_logits, prefilter)

    def compacted(boxes, logits, gts, labels, mask, obj, anchors):
        # Gather the image's prefiltered anchors; SimOTA never looks at the others.
        index = true_indices(anchors, columns, num_anchors)
        take = lambda x: None if x is None else take_rows(x, index, mode="clip")
        compact = per_image(
            take(boxes),
            take(logits),
            take(points),
            take(args.strides),
            gts,
            labels,
            mask,
            take(obj),
            index < num_anchors,
        )
        return _scatter_anchors(compact, index, gts, labels, num_anchors)

    return buckets.vmap_in_chunks(compacted, chunk, *images, args.obj_logits, prefilter)


def _prefilter_batch(points, strides, gt_boxes, gt_mask, config: SimOTAConfig) -> Array:
    """``[B, A]`` prefiltered anchors of every image."""
    pairs = lambda boxes, mask: _pair_geometry(points, strides, boxes, mask, config)[0]
    return buckets.any_over_gts(jax.vmap(pairs), gt_boxes, gt_mask, config.sizes)


@jax.jit
def _assign_batch(args: AssignArgs, config: SimOTAConfig) -> Assignment:
    """The prefilter on the real gts' size first, then the assignment at the gt and
    column sizes that hold the batch, chosen in one switch: each size compiles the
    prefilter once, not once per column size."""
    if args.gt_mask.shape[1] == 0:  # no gt slot: background, nothing to prefilter
        run = partial(_assign_at_size, config=config, prefilter=None, columns=None)
        return buckets.by_real_gts(args, run, sizes=config.sizes)
    find = partial(_prefilter_args, config=config)
    prefilter = buckets.on_real_gts(args, find, sizes=config.sizes)
    run = partial(_assign_at_size, config=config, prefilter=prefilter)
    columns = (prefilter.sum(axis=1).max(), args.points.shape[0])
    return buckets.by_real_gts(args, run, sizes=config.sizes, columns=columns)


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


def _scatter_anchors(
    compact: Assignment, index: Array, gt_boxes: Array, gt_labels: Array, num_anchors: int
) -> Assignment:
    """An assignment over gathered anchors ``index [K]`` back onto all ``num_anchors``:
    the gt indices and IoUs are scattered, the other fields gathered from the gts."""
    scatter = lambda x, fill: jnp.full((num_anchors,), fill, x.dtype).at[index].set(x, mode="drop")
    gt_index = scatter(compact.gt_index, -1)
    fg_mask = gt_index >= 0
    # Only real, valid gts are assigned, and their boxes and labels need no cleaning.
    safe_index = jnp.maximum(gt_index, 0)
    return compact._replace(
        gt_index=gt_index,
        fg_mask=fg_mask,
        labels=jnp.where(fg_mask, gt_labels[safe_index].astype(jnp.int32), -1),
        box_targets=jnp.where(fg_mask[:, None], gt_boxes[safe_index].astype(jnp.float32), 0.0),
        ious=scatter(compact.ious, 0.0),
        ignore_mask=jnp.zeros((num_anchors,), bool),
    )


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
        _, allowed = _pair_geometry(part.points, part.strides, part.gt_boxes, part.gt_mask, config)
        # Cost: BCE of the class score vs one-hot + iou_weight * -log IoU + penalty.
        class_cost = bce_class_cost(
            part.cls_logits, part.obj_logits, part.gt_labels, background=background
        )
        cost = finite_cost(
            class_cost - config.iou_weight * jnp.log(part.ious + 1e-8) + config.penalty * (~allowed)
        )
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
    gt_index = resolve_votes(votes)
    # The [M, A] IoUs were never built whole: each anchor's IoU with its gt, anew.
    ious = elementwise_iou(inputs.gt_boxes[jnp.maximum(gt_index, 0)], inputs.pred_boxes)
    ious = jnp.where(jnp.isfinite(ious), ious, 0.0)
    return make_assignment(gt_index, inputs, ks.reshape(-1)[:num_gt], anchor_ious=ious)


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
