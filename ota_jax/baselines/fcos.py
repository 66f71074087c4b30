"""FCOS label assignment (Tian et al. 2019), as mmdetection's ``FCOSHead._get_targets_single``.

A (gt, anchor point) pair is allowed when

1. the point lies inside the gt: with centre sampling (the default, as mmdet's FCOS
   configs with centre sampling; ``FCOSHead``'s own default is without) inside the
   square of half-width ``center_radius * stride`` around the gt centre, clipped to
   the gt box, all four distances > 0; without, inside the gt box itself, all four
   distances > 0. With centre sampling only the square counts, as in mmdet.
2. the largest of the four regression distances ``l, t, r, b`` from the point to the
   gt box sides lies in the point's level range: ``lo <= max(l, t, r, b) <= hi``
   (``FCOSAssignConfig.regress_ranges``; by default mmdet's for strides 8 to 128).

Each point takes the allowed gt of smallest area (the first gt on equal areas); a
point allowed for no gt is background. Predictions play no part. ``dynamic_k`` is
the number of points each gt won; ``ignore_mask`` is all False.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
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
from ota_jax._src.public import assign_batch, assign_one_image
from ota_jax.assignment import Assignment
from ota_jax.baselines.levels import level_index
from ota_jax.boxes import box_area
from ota_jax.priors import inside_boxes, inside_centre_regions

__all__ = ["FCOSAssignConfig", "fcos_assign", "fcos_assign_batch"]


@assigner_config
class FCOSAssignConfig:
    """FCOS assignment hyperparameters; the defaults are those of mmdetection's FCOS
    configs with centre sampling (``configs/fcos/fcos_r50-caffe_fpn_gn-head-center*``:
    ``center_sampling=True, center_sample_radius=1.5``). ``FCOSHead``'s own default,
    the original paper's rule, is ``center_sampling=False``.

    Attributes:
      center_sampling: allow only points in the gt's centre square (clipped to the box)
        instead of every point inside the box.
      center_radius: half-width of the centre square, in strides of the point's level.
      regress_ranges: one ``(lo, hi)`` per level (distinct stride, finest first): a
        point may regress a gt when ``lo <= max(l, t, r, b) <= hi``. Points on levels
        beyond the ranges given are never positive (the number of levels is only known
        when tracing). None derives contiguous ranges from the strides ``s_0 < s_1 <
        ...``: level ``i`` gets ``(8 * s_{i-1}, 8 * s_i)``, with ``lo = -1`` on the
        finest level and ``hi = inf`` on the coarsest. For strides 8, 16, 32, 64, 128
        that is exactly ``FCOSHead``'s default ``((-1, 64), (64, 128), (128, 256),
        (256, 512), (512, INF))`` (the paper's ``m_i``), and for 8, 16, 32 its first
        two ranges and ``(128, inf)``. Mmdet has no rule for other strides: it
        asserts one explicit range per level (``FCOSHead.get_targets``), so pass
        ``regress_ranges`` to match a mmdet config whose levels are not those.
      sizes: the static sizes it runs at: ``"auto"``, ``"cpu"``, ``"accelerator"``,
        ``"off"`` (one program at the padded size) or a `ota_jax.Sizes` (see
        `ota_jax.resolve_sizes`).
    """

    center_sampling: bool = True
    center_radius: float = 1.5
    regress_ranges: tuple[tuple[float, float], ...] | None = None
    sizes: str | buckets.Sizes = "auto"

    def __post_init__(self):
        if not self.center_radius > 0:
            raise ValueError(f"center_radius must be positive, got {self.center_radius}")
        if self.regress_ranges is None:
            return
        try:
            ranges = tuple((float(lo), float(hi)) for lo, hi in self.regress_ranges)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"regress_ranges must be (lo, hi) pairs, got {self.regress_ranges!r}"
            ) from error
        if not ranges or any(not lo <= hi for lo, hi in ranges):
            raise ValueError(f"regress_ranges need lo <= hi on every level, got {ranges}")
        # A tuple of tuples keeps the config hashable, as a static jit argument must be.
        object.__setattr__(self, "regress_ranges", ranges)


def _scale_ranges(strides: Array, config: FCOSAssignConfig) -> tuple[Array, Array]:
    """``lo [A]`` and ``hi [A]``: the regression range of each point's level."""
    if config.regress_ranges is None:
        # The next finer stride of each point's level: the largest stride below its own
        # (the entry just before its first place in sorted order; unused on the finest).
        ordered = jnp.sort(strides)
        first = jnp.searchsorted(ordered, strides, side="left")
        finer = ordered[jnp.maximum(first - 1, 0)]
        lo = jnp.where(strides == strides.min(), -1.0, 8 * finer)
        hi = jnp.where(strides == strides.max(), jnp.inf, 8 * strides)
        return lo, hi
    # An extra empty range (lo > hi) for levels the config does not cover.
    ranges = np.array([*config.regress_ranges, (math.inf, -math.inf)], np.float32)
    level = jnp.minimum(level_index(strides), len(config.regress_ranges))
    return jnp.asarray(ranges[:, 0])[level], jnp.asarray(ranges[:, 1])[level]


def _fcos_one_image(
    pred_boxes,
    cls_logits,
    points,
    strides,
    gt_boxes,
    gt_labels,
    gt_mask,
    obj_logits,
    config: FCOSAssignConfig,
) -> Assignment:
    inputs = prepare_inputs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    points, strides, boxes = inputs.points, inputs.strides, inputs.gt_boxes

    if config.center_sampling:
        inside = inside_centre_regions(
            points, strides, boxes, config.center_radius, clip_to_box=True
        )
    else:
        inside = inside_boxes(points, boxes)
    x, y = points[None, :, 0], points[None, :, 1]
    farthest = jnp.maximum(
        jnp.maximum(x - boxes[:, 0:1], y - boxes[:, 1:2]),
        jnp.maximum(boxes[:, 2:3] - x, boxes[:, 3:4] - y),
    )
    lo, hi = _scale_ranges(strides, config)
    allowed = inside & (farthest >= lo) & (farthest <= hi) & inputs.gt_mask[:, None]

    # The smallest allowed gt wins; argmin takes the first of equal areas.
    # An area past float32's range (sides of 1e20) is clamped: it must not tie with
    # the inf that marks pairs not allowed.
    area = jnp.minimum(box_area(boxes), jnp.finfo(jnp.float32).max)
    area = jnp.where(allowed, area[:, None], jnp.inf)
    gt_index = jnp.where(allowed.any(axis=0), jnp.argmin(area, axis=0), -1)
    num_won = jnp.bincount(gt_index + 1, length=boxes.shape[0] + 1)[1:].astype(jnp.int32)
    return make_assignment(gt_index, inputs, num_won)


@jax.jit
def _assign_batch(args: AssignArgs, config: FCOSAssignConfig) -> Assignment:
    run = partial(vmap_images, _fcos_one_image, config=config)
    return buckets.by_real_gts(args, run, sizes=config.sizes)


def fcos_assign(
    pred_boxes: ArrayLike,
    cls_logits: ArrayLike,
    points: ArrayLike,
    strides: ArrayLike,
    gt_boxes: ArrayLike,
    gt_labels: ArrayLike,
    gt_mask: ArrayLike,
    *,
    obj_logits: ArrayLike | None = None,
    config: FCOSAssignConfig = FCOSAssignConfig(),
) -> Assignment:
    """FCOS label assignment for one image (see the module docstring). Predictions
    play no part; ``pred_boxes`` only feed ``Assignment.ious``.

    Args:
      pred_boxes: ``[A, 4]`` predicted boxes, xyxy pixels.
      cls_logits: ``[A, C]`` class logits.
      points: ``[A, 2]`` anchor point centres ``(x, y)`` in pixels.
      strides: ``[A]`` stride of each anchor's FPN level.
      gt_boxes: ``[M, 4]`` gt boxes, xyxy pixels; M may be 0.
      gt_labels: ``[M]`` int gt classes in ``[0, C)``.
      gt_mask: ``[M]`` bool, True for real gts, False for padding.
      obj_logits: optional ``[A]``; unused, accepted for a common signature.
      config: a `FCOSAssignConfig`; its float fields are traced (a sweep compiles once).

    Returns:
      An `Assignment`; ``dynamic_k [M]`` counts the points each gt won. Invalid gts are
      ignored like padding. An image without gts or without anchors is all background.

    Raises:
      ValueError, TypeError: arguments whose shapes or dtypes do not fit, or a
        config of another class; the message names them.
    """
    args = AssignArgs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    return assign_one_image(_assign_batch, args, config, FCOSAssignConfig, "fcos_assign")


def fcos_assign_batch(
    pred_boxes: ArrayLike,
    cls_logits: ArrayLike,
    points: ArrayLike,
    strides: ArrayLike,
    gt_boxes: ArrayLike,
    gt_labels: ArrayLike,
    gt_mask: ArrayLike,
    *,
    obj_logits: ArrayLike | None = None,
    config: FCOSAssignConfig = FCOSAssignConfig(),
) -> Assignment:
    """FCOS label assignment for a batch of images, all at once.

    Args:
      pred_boxes: ``[B, A, 4]`` predicted boxes, xyxy pixels.
      cls_logits: ``[B, A, C]`` class logits.
      points: ``[A, 2]`` anchor point centres ``(x, y)`` in pixels, shared by all images.
      strides: ``[A]`` stride of each anchor's FPN level, shared by all images.
      gt_boxes: ``[B, M, 4]`` gt boxes, xyxy pixels, padded to a common M (may be 0).
      gt_labels: ``[B, M]`` int gt classes in ``[0, C)``.
      gt_mask: ``[B, M]`` bool, True for real gts, False for padding; padding never
        changes a result.
      obj_logits: optional ``[B, A]``, as for `fcos_assign`.
      config: a `FCOSAssignConfig`; its float fields are traced (a sweep compiles once).

    Returns:
      An `Assignment` with a leading ``[B]`` on every field, each image's as
      `fcos_assign` gives it. A batch of no images (``B == 0``) gives every field
      with 0 images.

    Raises:
      ValueError, TypeError: as `fcos_assign`; a shape error lists every batched shape.
    """
    args = AssignArgs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    return assign_batch(_assign_batch, args, config, FCOSAssignConfig, "fcos_assign_batch")
