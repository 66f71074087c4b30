"""Task-aligned assignment (TOOD, Feng et al. 2021; YOLOv8's ``TaskAlignedAssigner``).

Semantics, per image, over the real gts (padded and invalid gts take no part):

1. Alignment metric ``t = s^alpha * IoU^beta`` for every (gt, anchor) pair: ``s`` is
   the anchor's score of the gt's class (``sigmoid(cls)``, or with an objectness
   logit ``sqrt(sigmoid(cls) * sigmoid(obj))``, which is also how TOOD's head
   combines its class logits and its one-channel ``cls_prob``), IoU that of the
   anchor's predicted box with the gt (plain IoU as mmdet's ``BboxOverlaps2D``;
   ultralytics uses CIoU clamped at 0).
2. Inside test: the anchor point lies inside the gt box, all four point-to-side
   distances ``> inside_eps`` (mmdet 0.01, ultralytics 1e-9). With
   ``grow_small_gts`` (ultralytics 8.4) the box tested is the gt grown about its
   centre, see `TALConfig`; the metric still uses the gt itself.
3. Each gt takes at most ``topk`` anchors of highest metric (ties: lower anchor
   index first), in one of two orders (``TALConfig.candidates``):

   - ``"topk_then_inside"`` (mmdet ``TaskAlignedAssigner``, TOOD): rank ALL anchors
     by the metric, keep the gt's top ``topk``, then drop those whose point fails
     the inside test. A gt keeps fewer than ``topk`` (often none for a small gt)
     when anchors outside it align better.
   - ``"inside_then_topk"`` (ultralytics ``TaskAlignedAssigner``, YOLOv8): rank only
     the anchors that pass the inside test and keep the top ``topk`` of them.

   Either way one is taken only if its metric is > 0 (as mmdet), so an anchor whose
   predicted box misses the gt is never taken. (Ultralytics may also take inside
   anchors of metric 0 when fewer than ``topk`` have a positive one: whichever
   ``torch.topk`` returns among the zeros.)
4. An anchor taken by several gts goes to the one of them with the highest IoU
   (first gt on ties), as mmdet's ``TaskAlignedAssigner``. (Ultralytics picks the
   highest IoU over every gt whose box holds the anchor, taker or not.)
5. ``Assignment.dynamic_k`` holds the number of anchors each gt took before
   step 4, 0 for padded gts.
6. ``Assignment.soft_targets [A]``: the normalised alignment metric, the target of
   the classification branch at the gt's class in TOOD and YOLOv8. For a positive
   anchor ``a`` of gt ``g`` (after step 4), ``t(g, a) / (max_P t + soft_target_eps)
   * max_P IoU``, both maxima over ``P``, the anchors ``g`` holds after step 4; 0 for
   background. This is mmdet ``TOODHead._get_targets_single``'s
   ``norm_alignment_metrics`` (eps ``10e-8``) and ultralytics'
   ``norm_align_metric`` (eps 1e-9, CIoU in place of IoU).

Not modelled: TOOD's first ``initial_epoch=4`` epochs, which mmdet trains with
``ATSSAssigner(topk=9)`` (use `ota_jax.atss_assign` there), and ultralytics 8.4's
``topk2`` (a second top-k after step 4, off by default).

The metric is ranked in log space, ``alpha * log s + beta * log IoU``: the
ranking is the same, but ``IoU^6`` of a small IoU underflows float32 to 0 (a
false tie, and a false "metric == 0") where the log stays exact. NaN scores count
as score 0 (never positive).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from ota_jax._src import buckets
from ota_jax._src.config import assigner_config
from ota_jax._src.inputs import (
    AssignArgs,
    AssignInputs,
    make_assignment,
    prepare_inputs,
    vmap_images,
)
from ota_jax._src.public import assign_batch, assign_one_image
from ota_jax.assignment import Assignment
from ota_jax.priors import inside_boxes

__all__ = ["TALConfig", "tal_assign", "tal_assign_batch"]


_CANDIDATE_RULES = ("topk_then_inside", "inside_then_topk")


@assigner_config
class TALConfig:
    """Task-aligned assigner hyperparameters; the defaults are TOOD's, as mmdetection
    3.x trains it (``configs/tood/tood_r50_fpn_1x_coco.py``: ``TaskAlignedAssigner(
    topk=13)``, ``alpha=1``, ``beta=6``; the assigner's top-k over all anchors, its
    0.01 inside margin, its ``10e-8`` normalisation eps).

    `TALConfig.yolov8` gives ultralytics' values (its ``v8DetectionLoss``):
    ``alpha=0.5, beta=6.0, topk=10``, inside first, margin and eps 1e-9.

    Attributes:
      alpha: exponent of the class score in the metric, >= 0.
      beta: exponent of the IoU in the metric, >= 0.
      topk: anchors each gt takes at most (the top of its metric).
      candidates: the order of the top-k and the inside test (module docstring, step
        3): ``"topk_then_inside"``, mmdet's (TOOD), ranks all anchors and then drops
        the top-k anchors outside the gt; ``"inside_then_topk"``, ultralytics'
        (YOLOv8), ranks only the anchors inside the gt. Mmdet's rule gives markedly
        fewer positives on the same predictions.
      inside_eps: an anchor point is inside a gt box when every side is farther than
        this (mmdet 0.01, ultralytics 1e-9).
      grow_small_gts: for the inside test only, grow each gt side shorter than the
        second-smallest stride of ``strides`` to that stride, about the gt centre
        (the smallest stride with a single level), as ultralytics 8.4's
        ``select_candidates_in_gts`` does with its model strides (8.4.190: sides
        under ``stride[1]`` = 16 px become 16 px for strides 8/16/32; 8.4.0 grew only
        sides under ``stride[0]`` = 8 px, to 16 px; 8.3 and mmdet grow nothing).
        Width and height are grown separately; the metric and IoUs use the gt box.
      soft_target_eps: added to each gt's largest metric when normalising
        ``Assignment.soft_targets`` (mmdet ``10e-8`` = 1e-7, ultralytics 1e-9), >= 0.
      sizes: the static sizes it runs at: ``"auto"``, ``"cpu"``, ``"accelerator"``,
        ``"off"`` (one program at the padded size) or a `ota_jax.Sizes` (see
        `ota_jax.resolve_sizes`).
    """

    alpha: float = 1.0
    beta: float = 6.0
    topk: int = 13
    candidates: Literal["topk_then_inside", "inside_then_topk"] = "topk_then_inside"
    inside_eps: float = 0.01
    grow_small_gts: bool = False
    soft_target_eps: float = 1e-7
    sizes: str | buckets.Sizes = "auto"

    def __post_init__(self):
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be finite and >= 0, got {self.alpha}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be finite and >= 0, got {self.beta}")
        if self.topk < 1:
            raise ValueError(f"topk must be at least 1, got {self.topk}")
        if self.candidates not in _CANDIDATE_RULES:
            raise ValueError(
                f"candidates must be one of {_CANDIDATE_RULES}, got {self.candidates!r}"
            )
        if not (math.isfinite(self.inside_eps) and self.inside_eps >= 0):
            raise ValueError(f"inside_eps must be finite and >= 0, got {self.inside_eps}")
        if not (math.isfinite(self.soft_target_eps) and self.soft_target_eps >= 0):
            raise ValueError(f"soft_target_eps must be finite and >= 0, got {self.soft_target_eps}")

    @classmethod
    def yolov8(cls, **changes) -> TALConfig:
        """Ultralytics' task-aligned assigner as its detection loss builds it (YOLOv8
        and later): ``alpha=0.5, beta=6.0, topk=10``, ``"inside_then_topk"``, margin
        and eps 1e-9, no growing of small gts (ultralytics 8.3; pass
        ``grow_small_gts=True`` for 8.4). ``changes`` override any field."""
        values = dict(
            alpha=0.5,
            beta=6.0,
            topk=10,
            candidates="inside_then_topk",
            inside_eps=1e-9,
            grow_small_gts=False,
            soft_target_eps=1e-9,
        )
        return cls(**{**values, **changes})


def _scaled_log(log_x: Array, exponent: float) -> Array:
    """``exponent * log_x``, with ``x^0 = 1`` also for ``x = 0`` (``0 * -inf`` is NaN)."""
    return jnp.where(exponent == 0, 0.0, exponent * log_x)  # exponent may be traced


def _log_metric(inputs: AssignInputs, config: TALConfig) -> Array:
    """``[M, A]`` log of the alignment metric; -inf where the metric is 0 or undefined."""
    # Gather each gt's class logit first: [M, A] log-sigmoids instead of [A, C].
    gt_logits = jnp.take(inputs.cls_logits, inputs.gt_labels, axis=1).T
    log_score = jax.nn.log_sigmoid(gt_logits)
    if inputs.obj_logits is not None:
        log_score = 0.5 * (log_score + jax.nn.log_sigmoid(inputs.obj_logits)[None, :])
    log_metric = _scaled_log(log_score, config.alpha) + _scaled_log(
        jnp.log(inputs.ious), config.beta
    )
    return jnp.where(jnp.isnan(log_metric), -jnp.inf, log_metric)


def _grown_boxes(boxes: Array, strides: Array) -> Array:
    """``boxes [M, 4]`` with each side shorter than the second-smallest stride grown to
    it about the box centre (the smallest stride with one level); other sides kept."""
    smallest = jnp.min(strides, initial=jnp.inf)
    second = jnp.min(jnp.where(strides > smallest, strides, jnp.inf), initial=jnp.inf)
    side = jnp.where(jnp.isfinite(second), second, smallest)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    short = (boxes[:, 2:] - boxes[:, :2]) < side
    lower = jnp.where(short, centre - side / 2, boxes[:, :2])
    upper = jnp.where(short, centre + side / 2, boxes[:, 2:])
    return jnp.concatenate([lower, upper], axis=1)


def _soft_targets(gt_index: Array, log_metric: Array, ious: Array, config: TALConfig) -> Array:
    """``[A]`` normalised metric of each positive (module docstring, step 6), 0 elsewhere."""
    num_gt = log_metric.shape[0]
    holds = gt_index[None, :] == jnp.arange(num_gt)[:, None]  # [M, A] after conflicts
    # log(max t + eps) per gt; a gt holding nothing gets -inf and is never read.
    log_max = jnp.max(jnp.where(holds, log_metric, -jnp.inf), axis=1)
    log_denominator = jnp.logaddexp(
        log_max, jnp.log(jnp.asarray(config.soft_target_eps, jnp.float32))
    )
    max_iou = jnp.max(jnp.where(holds, ious, 0.0), axis=1)
    safe_index = jnp.maximum(gt_index, 0)
    own_log_metric = jnp.take_along_axis(log_metric, safe_index[None, :], axis=0)[0]
    soft = jnp.exp(own_log_metric - log_denominator[safe_index]) * max_iou[safe_index]
    return jnp.where(gt_index >= 0, soft, 0.0)


def _tal_one_image(
    pred_boxes,
    cls_logits,
    points,
    strides,
    gt_boxes,
    gt_labels,
    gt_mask,
    obj_logits,
    config: TALConfig,
) -> Assignment:
    inputs = prepare_inputs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    num_gt, num_anchors = inputs.ious.shape

    tested_boxes = inputs.gt_boxes
    if config.grow_small_gts:
        tested_boxes = _grown_boxes(tested_boxes, inputs.strides)
    inside = inside_boxes(inputs.points, tested_boxes, margin=config.inside_eps)
    inside = inside & inputs.gt_mask[:, None]
    log_metric = jnp.where(inputs.gt_mask[:, None], _log_metric(inputs, config), -jnp.inf)

    # Top-k per gt; -inf (metric 0, or outside for "inside_then_topk") is never taken.
    ranked = (
        log_metric
        if config.candidates == "topk_then_inside"
        else jnp.where(inside, log_metric, -jnp.inf)
    )
    top_metric, order = jax.lax.top_k(ranked, min(config.topk, num_anchors))
    rows = jnp.arange(num_gt)[:, None]
    taken = jnp.zeros((num_gt, num_anchors), bool).at[rows, order].set(top_metric > -jnp.inf)
    taken = taken & inside

    # Conflicts: the taker of highest IoU (argmax: first gt on ties).
    best_taker = jnp.argmax(jnp.where(taken, inputs.ious, -jnp.inf), axis=0)
    gt_index = jnp.where(taken.any(axis=0), best_taker, -1)
    assignment = make_assignment(gt_index, inputs, taken.sum(axis=1, dtype=jnp.int32))
    return assignment._replace(
        soft_targets=_soft_targets(gt_index, log_metric, inputs.ious, config)
    )


@jax.jit
def _assign_batch(args: AssignArgs, config: TALConfig) -> Assignment:
    run = partial(vmap_images, _tal_one_image, config=config)
    return buckets.by_real_gts(args, run, sizes=config.sizes)


def _with_soft_targets(result: Assignment) -> Assignment:
    """``result`` with zero soft targets where no anchor met a gt (no gt slot, no
    anchor, no image), as every other TAL result has them."""
    if result.soft_targets is None:
        result = result._replace(soft_targets=jnp.zeros(result.ious.shape, jnp.float32))
    return result


def tal_assign(
    pred_boxes: ArrayLike,
    cls_logits: ArrayLike,
    points: ArrayLike,
    strides: ArrayLike,
    gt_boxes: ArrayLike,
    gt_labels: ArrayLike,
    gt_mask: ArrayLike,
    *,
    obj_logits: ArrayLike | None = None,
    config: TALConfig = TALConfig(),
) -> Assignment:
    """Task-aligned label assignment for one image (see the module docstring).

    Args:
      pred_boxes: ``[A, 4]`` predicted boxes, xyxy pixels.
      cls_logits: ``[A, C]`` class logits.
      points: ``[A, 2]`` anchor point centres ``(x, y)`` in pixels.
      strides: ``[A]`` stride of each anchor's FPN level.
      gt_boxes: ``[M, 4]`` gt boxes, xyxy pixels; M may be 0.
      gt_labels: ``[M]`` int gt classes in ``[0, C)``.
      gt_mask: ``[M]`` bool, True for real gts, False for padding.
      obj_logits: optional ``[A]`` objectness logits; the score becomes
        ``sqrt(sigmoid(cls) * sigmoid(obj))``.
      config: a `TALConfig`; its float fields are traced (a sweep compiles once).

    Returns:
      An `Assignment`; ``dynamic_k`` counts the anchors each gt took before conflicts;
      ``soft_targets [A]`` holds the normalised alignment metric of each positive (the
      classification target of TOOD and YOLOv8), 0 for background. Invalid gts are
      ignored, non-finite predictions never give NaN. An image without gts or without
      anchors is all background.

    Raises:
      ValueError, TypeError: arguments whose shapes or dtypes do not fit, or a
        config of another class; the message names them.
    """
    args = AssignArgs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    return _with_soft_targets(
        assign_one_image(_assign_batch, args, config, TALConfig, "tal_assign")
    )


def tal_assign_batch(
    pred_boxes: ArrayLike,
    cls_logits: ArrayLike,
    points: ArrayLike,
    strides: ArrayLike,
    gt_boxes: ArrayLike,
    gt_labels: ArrayLike,
    gt_mask: ArrayLike,
    *,
    obj_logits: ArrayLike | None = None,
    config: TALConfig = TALConfig(),
) -> Assignment:
    """Task-aligned label assignment for a batch of images, all at once.

    Args:
      pred_boxes: ``[B, A, 4]`` predicted boxes, xyxy pixels.
      cls_logits: ``[B, A, C]`` class logits.
      points: ``[A, 2]`` anchor point centres ``(x, y)`` in pixels, shared by all images.
      strides: ``[A]`` stride of each anchor's FPN level, shared by all images.
      gt_boxes: ``[B, M, 4]`` gt boxes, xyxy pixels, padded to a common M (may be 0).
      gt_labels: ``[B, M]`` int gt classes in ``[0, C)``.
      gt_mask: ``[B, M]`` bool, True for real gts, False for padding; padding never
        changes a result.
      obj_logits: optional ``[B, A]``, as for `tal_assign`.
      config: a `TALConfig`; its float fields are traced (a sweep compiles once).

    Returns:
      An `Assignment` with a leading ``[B]`` on every field, each image's as
      `tal_assign` gives it. A batch of no images (``B == 0``) gives every field
      with 0 images.

    Raises:
      ValueError, TypeError: as `tal_assign`; a shape error lists every batched shape.
    """
    args = AssignArgs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    return _with_soft_targets(
        assign_batch(_assign_batch, args, config, TALConfig, "tal_assign_batch")
    )
