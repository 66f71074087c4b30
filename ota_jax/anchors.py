"""Anchor points of an FPN: one point per feature-map cell, all levels concatenated.

The order is level by level (finest first), row-major inside a level, which is
the order a model gets by flattening each ``[H_l, W_l, ...]`` head output and
concatenating the levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import Array

__all__ = ["anchor_boxes", "anchor_points", "feature_sizes", "level_sizes"]


def feature_sizes(
    image_size: tuple[int, int], strides: Sequence[int]
) -> tuple[tuple[int, int], ...]:
    """``(H_l, W_l)`` of each level: ``ceil(size / stride)``, as strided convs with padding give."""
    height, width = image_size
    return tuple((math.ceil(height / s), math.ceil(width / s)) for s in strides)


def level_sizes(image_size: tuple[int, int], strides: Sequence[int]) -> tuple[int, ...]:
    """Number of anchor points on each level, ``H_l * W_l``."""
    return tuple(h * w for h, w in feature_sizes(image_size, strides))


def anchor_points(
    image_size: tuple[int, int],
    strides: Sequence[int] = (8, 16, 32),
    *,
    offset: float = 0.5,
) -> tuple[Array, Array]:
    """Anchor point centres and strides for an image of ``image_size = (H, W)`` pixels.

    Args:
      image_size: static ``(height, width)`` of the (padded) network input.
      strides: the stride of each FPN level, finest first.
      offset: where a point sits inside its cell, in strides: 0.5 is the cell
        centre (YOLOX, mmdet), 0.0 its top-left corner (the cvpods FCOS default).

    Returns:
      ``points [A, 2]`` float32 ``(x, y)`` pixel centres and ``strides [A]``
      float32, with ``A = sum_l H_l * W_l``.

    >>> points, strides = anchor_points((64, 64), (8, 16))
    >>> points.shape, strides.shape
    ((80, 2), (80,))
    """
    if not strides:
        raise ValueError("anchor_points needs at least one stride")
    points, point_strides = [], []
    for stride, (height, width) in zip(strides, feature_sizes(image_size, strides), strict=True):
        ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        cell = np.stack([xs.ravel(), ys.ravel()], axis=-1).astype(np.float32)
        points.append((cell + offset) * stride)
        point_strides.append(np.full(height * width, stride, np.float32))
    return jnp.asarray(np.concatenate(points)), jnp.asarray(np.concatenate(point_strides))


def anchor_boxes(points: Array, strides: Array, *, scale: float = 8.0) -> Array:
    """``[A, 4]`` xyxy square anchor boxes of side ``scale * stride`` centred on ``points``.

    The boxes of the anchor-based baselines (ATSS's octave base scale 8, RetinaNet's
    one-anchor-per-point Max-IoU), one per anchor point.
    """
    half = (scale * jnp.asarray(strides, jnp.float32) / 2)[:, None]
    points = jnp.asarray(points, jnp.float32)
    return jnp.concatenate([points - half, points + half], axis=-1)
