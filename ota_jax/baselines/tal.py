"""Task-aligned assignment (TOOD, Feng et al. 2021; YOLOv8's ``TaskAlignedAssigner``).

Semantics, per image, over the real gts (padded and invalid gts take no part):

1. Candidates ``[M, A]``: the anchor point lies inside the gt box, all four
   point-to-side distances ``> inside_eps`` (1e-9 as ultralytics; mmdet uses 0.01).
2. Alignment metric ``t = s^alpha * IoU^beta``: ``s`` is the anchor's score of the
   gt's class (``sigmoid(cls)``, or with an objectness logit
   ``sqrt(sigmoid(cls) * sigmoid(obj))`` as SimOTA), IoU that of the anchor's
   predicted box with the gt (plain IoU; ultralytics uses CIoU).
3. Each gt takes the ``topk`` candidates of highest metric (ties: lower anchor
   index first); one is positive only if its metric is > 0 (as mmdet), so an
   anchor whose predicted box misses the gt is never taken.
4. An anchor taken by several gts goes to the one of them with the highest IoU
   (first gt on ties), as mmdet's ``TaskAlignedAssigner``. (Ultralytics picks
   the highest IoU over every gt whose box holds the anchor, taker or not.)
5. ``Assignment.dynamic_k`` holds the number of anchors each gt took before
   step 4, 0 for padded gts.

The metric is ranked in log space, ``alpha * log s + beta * log IoU``: the
ranking is the same, but ``IoU^6`` of a small IoU underflows float32 to 0 (a
false tie, and a false "metric == 0") where the log stays exact. NaN scores count
as score 0 (never positive).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import Array

from ota_jax import buckets
from ota_jax.assignment import (
    AssignInputs,
    Assignment,
    make_assignment,
    prepare_inputs,
    public_assigners,
    vmap_images,
)
from ota_jax.priors import inside_boxes

__all__ = ["TALConfig", "tal_assign", "tal_assign_batch"]


@dataclasses.dataclass(frozen=True)
class TALConfig:
    """Task-aligned assigner hyperparameters; the defaults are TOOD's (mmdet).

    YOLOv8 (ultralytics) uses ``alpha=0.5, beta=6.0, topk=10``.

    Attributes:
      alpha: exponent of the class score in the metric, >= 0.
      beta: exponent of the IoU in the metric, >= 0.
      topk: anchors each gt takes at most (the top of its metric).
      inside_eps: an anchor point is inside a gt box when every side is farther
        than this (ultralytics 1e-9, mmdet 0.01).
      sizes: the static sizes it runs at: ``"auto"``, ``"cpu"``, ``"accelerator"``,
        ``"off"`` (one program at the padded size) or a `ota_jax.Sizes` (see
        `ota_jax.resolve_sizes`).
    """

    alpha: float = 1.0
    beta: float = 6.0
    topk: int = 13
    inside_eps: float = 1e-9
    sizes: str | buckets.Sizes = "auto"

    def __post_init__(self):
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be finite and >= 0, got {self.alpha}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be finite and >= 0, got {self.beta}")
        if self.topk < 1:
            raise ValueError(f"topk must be at least 1, got {self.topk}")
        if not (math.isfinite(self.inside_eps) and self.inside_eps >= 0):
            raise ValueError(f"inside_eps must be finite and >= 0, got {self.inside_eps}")


def _scaled_log(log_x: Array, exponent: float) -> Array:
    """``exponent * log_x``, with ``x^0 = 1`` also for ``x = 0`` (``0 * -inf`` is NaN)."""
    return jnp.zeros_like(log_x) if exponent == 0 else exponent * log_x


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

    inside = inside_boxes(inputs.points, inputs.gt_boxes, margin=config.inside_eps)
    inside = inside & inputs.gt_mask[:, None]
    log_metric = jnp.where(inside, _log_metric(inputs, config), -jnp.inf)

    # Top-k per gt; -inf (outside, or metric 0) is never taken.
    top_metric, order = jax.lax.top_k(log_metric, min(config.topk, num_anchors))
    rows = jnp.arange(num_gt)[:, None]
    taken = jnp.zeros((num_gt, num_anchors), bool).at[rows, order].set(top_metric > -jnp.inf)

    # Conflicts: the taker of highest IoU (argmax: first gt on ties).
    best_taker = jnp.argmax(jnp.where(taken, inputs.ious, -jnp.inf), axis=0)
    gt_index = jnp.where(taken.any(axis=0), best_taker, -1)
    return make_assignment(gt_index, inputs, taken.sum(axis=1, dtype=jnp.int32))


def _assign_batch(args: tuple, config: TALConfig) -> Assignment:
    run = partial(vmap_images, _tal_one_image, config=config)
    return buckets.by_real_gts(args, run, sizes=config.sizes)


tal_assign, tal_assign_batch = public_assigners(
    _assign_batch,
    TALConfig,
    name="tal",
    summary="""Task-aligned label assignment for one image (see the module docstring).""",
    obj_logits="""optional ``[A]`` objectness logits; the score becomes
        ``sqrt(sigmoid(cls) * sigmoid(obj))``.""",
    returns="""An `Assignment`; ``dynamic_k`` counts the anchors each gt took before
      conflicts. Invalid gts are ignored, non-finite predictions never give NaN.""",
)
