"""Dynamic soft label assignment (RTMDet, Lyu et al. 2022; mmdet's
``DynamicSoftLabelAssigner``).

Semantics, per image, over the real gts (padded and invalid gts take no part):

1. Valid anchors ``[A]``: the anchor point lies inside at least one real gt box
   (all four distances > 0). Other anchors take no part at all (not in the IoUs
   of dynamic k, never selected); an image without a valid anchor is all
   background.
2. Cost ``[M, A]`` = soft class cost + IoU cost + soft centre prior:

   - soft class cost: ``sum_c BCE_with_logits(x_c, t_c) * |t_c - sigmoid(x_c)|^2``
     with the soft target ``t = onehot(gt label) * IoU``; ``x`` are the class
     logits, or with an objectness logit the logits of
     ``sqrt(sigmoid(cls) * sigmoid(obj))`` (`costs.joint_logits`);
   - IoU cost: ``-log(IoU + iou_eps) * iou_weight``;
   - soft centre prior: ``10 ** (d / stride - soft_center_radius)``, ``d`` the
     Euclidean distance from the anchor point to the gt box centre. It replaces
     SimOTA's per-pair penalty: any gt may take any valid anchor.

3. Dynamic k per gt: ``max(1, int(sum of the top-topk IoUs over valid anchors))``.
4. Each gt takes its k lowest-cost valid anchors (ties: lower anchor index first);
   an anchor taken by several gts goes to the gt of lowest cost for it over all
   real gts (first on ties), as mmdet and YOLOX.
5. ``Assignment.dynamic_k`` is the k of step 3 (1 for a real gt of an image
   without valid anchors, the formula over an empty set), 0 for padded gts.

The exponent of the centre prior is capped at 30 (1e30, d > 33 strides) so that
float32 never overflows; beyond it distant anchors tie. A non-finite cost (NaN or
inf predictions) becomes 1e35, above every finite cost, so such an anchor is
taken only when nothing else is left (`assignment.finite_cost`'s 1e8 would rank
below the prior of anchors farther than 11 strides).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from ota_jax._src import buckets
from ota_jax._src.config import assigner_config
from ota_jax._src.inputs import (
    AssignArgs,
    make_assignment,
    prepare_inputs,
    vmap_images,
)
from ota_jax._src.matching import dynamic_k, dynamic_k_matching
from ota_jax._src.public import assign_batch, assign_one_image
from ota_jax.assignment import Assignment
from ota_jax.costs import joint_logits
from ota_jax.priors import inside_boxes

__all__ = ["DSLConfig", "dsl_assign", "dsl_assign_batch", "soft_label_class_cost"]

# 10**30 and the other terms stay far below float32's 3.4e38.
_MAX_PRIOR_EXPONENT = 30.0
# Above any finite cost (prior <= 1e30): non-finite pairs are taken last.
_NONFINITE_COST = 1e35


@assigner_config
class DSLConfig:
    """Dynamic soft label assigner hyperparameters; the defaults are RTMDet's (mmdet).

    Attributes:
      topk: q, the number of top IoUs summed for dynamic k; also the static bound
        on the anchors one gt can take.
      iou_weight: weight of the ``-log(IoU + iou_eps)`` cost.
      soft_center_radius: r in the centre prior ``10 ** (distance / stride - r)``.
      iou_eps: added to the IoU inside the log (mmdet's EPS).
      sizes: the static sizes it runs at: ``"auto"``, ``"cpu"``, ``"accelerator"``,
        ``"off"`` (one program at the padded size) or a `ota_jax.Sizes` (see
        `ota_jax.resolve_sizes`).
    """

    topk: int = 13
    iou_weight: float = 3.0
    soft_center_radius: float = 3.0
    iou_eps: float = 1e-7
    sizes: str | buckets.Sizes = "auto"

    def __post_init__(self):
        if self.topk < 1:
            raise ValueError(f"topk must be at least 1, got {self.topk}")
        if not (math.isfinite(self.iou_weight) and self.iou_weight >= 0):
            raise ValueError(f"iou_weight must be finite and >= 0, got {self.iou_weight}")
        if not math.isfinite(self.soft_center_radius):
            raise ValueError(f"soft_center_radius must be finite, got {self.soft_center_radius}")
        if not (math.isfinite(self.iou_eps) and self.iou_eps > 0):
            raise ValueError(f"iou_eps must be finite and > 0, got {self.iou_eps}")


def soft_label_class_cost(logits: Array, gt_labels: Array, ious: Array) -> Array:
    """RTMDet's soft-label class cost of every anchor against every gt, ``[M, A]``.

    ``sum_c BCE_with_logits(x_c, t_c) * |t_c - sigmoid(x_c)|^2`` with ``t`` the
    one-hot of the gt's class scaled by the pair's IoU, computed as the sum with
    ``t = 0`` over all classes, minus the gt class's ``t = 0`` term, plus its
    ``t = IoU`` term: ``O(A*C + M*A)``, never ``[M, A, C]``.

    Args:
      logits: ``[A, C]`` class logits.
      gt_labels: ``[M]`` int class of each gt, in ``[0, C)``.
      ious: ``[M, A]`` IoU of each gt with each predicted box (the soft target).
    """

    def term(x: Array, target: Array | None) -> Array:
        # One exp for both sigmoid(x) and BCE_with_logits(x, t) = softplus(x) - x*t,
        # stable for any finite x; target None is t = 0 (skips x * 0, NaN at inf).
        e = jnp.exp(-jnp.abs(x))
        prob = jnp.where(x >= 0, 1.0, e) / (1.0 + e)
        softplus = jnp.maximum(x, 0.0) + jnp.log1p(e)
        if target is None:
            return softplus * jnp.square(prob)
        return (softplus - x * target) * jnp.square(target - prob)

    gt_logits = jnp.take(logits, gt_labels, axis=1).T  # [M, A]
    background = term(logits, None).sum(axis=-1)  # [A]
    return background[None, :] - term(gt_logits, None) + term(gt_logits, ious)


def _dsl_one_image(
    pred_boxes,
    cls_logits,
    points,
    strides,
    gt_boxes,
    gt_labels,
    gt_mask,
    obj_logits,
    config: DSLConfig,
) -> Assignment:
    inputs = prepare_inputs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    gt_mask, ious = inputs.gt_mask, inputs.ious
    valid = (inside_boxes(inputs.points, inputs.gt_boxes) & gt_mask[:, None]).any(axis=0)

    centres = (inputs.gt_boxes[:, :2] + inputs.gt_boxes[:, 2:]) / 2
    distance = jnp.sqrt(jnp.sum(jnp.square(inputs.points[None] - centres[:, None]), axis=-1))
    exponent = distance / inputs.strides[None, :] - config.soft_center_radius
    centre_prior = jnp.power(10.0, jnp.minimum(exponent, _MAX_PRIOR_EXPONENT))

    class_cost = soft_label_class_cost(
        joint_logits(inputs.cls_logits, inputs.obj_logits), inputs.gt_labels, ious
    )
    cost = class_cost - config.iou_weight * jnp.log(ious + config.iou_eps) + centre_prior
    cost = jnp.where(jnp.isfinite(cost), cost, _NONFINITE_COST)

    # Each gt takes its k cheapest valid anchors, conflicts to the cheapest gt.
    k = dynamic_k(ious, valid, gt_mask, topk=config.topk)
    gt_index = dynamic_k_matching(cost, k, valid, gt_mask, topk=config.topk)
    return make_assignment(gt_index, inputs, k)


@jax.jit
def _assign_batch(args: AssignArgs, config: DSLConfig) -> Assignment:
    run = partial(vmap_images, _dsl_one_image, config=config)
    return buckets.by_real_gts(args, run, sizes=config.sizes)


def dsl_assign(
    pred_boxes: ArrayLike,
    cls_logits: ArrayLike,
    points: ArrayLike,
    strides: ArrayLike,
    gt_boxes: ArrayLike,
    gt_labels: ArrayLike,
    gt_mask: ArrayLike,
    *,
    obj_logits: ArrayLike | None = None,
    config: DSLConfig = DSLConfig(),
) -> Assignment:
    """Dynamic soft label assignment for one image (see the module docstring).

    Args:
      pred_boxes: ``[A, 4]`` predicted boxes, xyxy pixels.
      cls_logits: ``[A, C]`` class logits.
      points: ``[A, 2]`` anchor point centres ``(x, y)`` in pixels.
      strides: ``[A]`` stride of each anchor's FPN level.
      gt_boxes: ``[M, 4]`` gt boxes, xyxy pixels; M may be 0.
      gt_labels: ``[M]`` int gt classes in ``[0, C)``.
      gt_mask: ``[M]`` bool, True for real gts, False for padding.
      obj_logits: optional ``[A]`` objectness logits; the class cost then uses the
        logits of ``sqrt(sigmoid(cls) * sigmoid(obj))``.
      config: a `DSLConfig`; its float fields are traced (a sweep compiles once).

    Returns:
      An `Assignment`; ``dynamic_k`` is each gt's k. Invalid gts are ignored, non-finite
      predictions never give NaN. An image without gts or without anchors is all background.

    Raises:
      ValueError, TypeError: arguments whose shapes or dtypes do not fit, or a
        config of another class; the message names them.
    """
    args = AssignArgs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    return assign_one_image(_assign_batch, args, config, DSLConfig, "dsl_assign")


def dsl_assign_batch(
    pred_boxes: ArrayLike,
    cls_logits: ArrayLike,
    points: ArrayLike,
    strides: ArrayLike,
    gt_boxes: ArrayLike,
    gt_labels: ArrayLike,
    gt_mask: ArrayLike,
    *,
    obj_logits: ArrayLike | None = None,
    config: DSLConfig = DSLConfig(),
) -> Assignment:
    """Dynamic soft label assignment for a batch of images, all at once.

    Args:
      pred_boxes: ``[B, A, 4]`` predicted boxes, xyxy pixels.
      cls_logits: ``[B, A, C]`` class logits.
      points: ``[A, 2]`` anchor point centres ``(x, y)`` in pixels, shared by all images.
      strides: ``[A]`` stride of each anchor's FPN level, shared by all images.
      gt_boxes: ``[B, M, 4]`` gt boxes, xyxy pixels, padded to a common M (may be 0).
      gt_labels: ``[B, M]`` int gt classes in ``[0, C)``.
      gt_mask: ``[B, M]`` bool, True for real gts, False for padding; padding never
        changes a result.
      obj_logits: optional ``[B, A]``, as for `dsl_assign`.
      config: a `DSLConfig`; its float fields are traced (a sweep compiles once).

    Returns:
      An `Assignment` with a leading ``[B]`` on every field, each image's as
      `dsl_assign` gives it. A batch of no images (``B == 0``) gives every field
      with 0 images.

    Raises:
      ValueError, TypeError: as `dsl_assign`; a shape error lists every batched shape.
    """
    args = AssignArgs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    return assign_batch(_assign_batch, args, config, DSLConfig, "dsl_assign_batch")
