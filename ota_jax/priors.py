"""Geometric priors: which anchor points lie inside a gt box or near its centre.

All functions take anchor ``points [A, 2]`` (x, y), their ``strides [A]`` and
gt ``boxes [M, 4]`` xyxy, and return ``[M, A]`` boolean masks. The distance
arithmetic follows the reference code term by term (``x - left``,
``right - x``, ...), so that points exactly on a boundary fall on the same side.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

__all__ = ["centre_regions", "inside_boxes", "inside_centre_regions"]


def _min_distance(points: Array, regions: Array) -> Array:
    """Smallest of the four point-to-side distances, ``[M, A]``, for ``regions [M, A|1, 4]``."""
    x, y = points[None, :, 0], points[None, :, 1]
    distances = jnp.stack(
        [
            x - regions[..., 0],
            y - regions[..., 1],
            regions[..., 2] - x,
            regions[..., 3] - y,
        ],
        axis=-1,
    )
    return distances.min(axis=-1)


def inside_boxes(points: Array, boxes: Array, *, margin: float = 0.0) -> Array:
    """``[M, A]``: the point lies inside the box, every side farther than ``margin``."""
    return _min_distance(points, boxes[:, None, :]) > margin


def centre_regions(
    boxes: Array, strides: Array, radius: float, *, clip_to_box: bool = False
) -> Array:
    """``[M, A, 4]`` squares of half-width ``radius * stride`` around each gt centre.

    The square depends on the anchor's stride, hence one region per (gt, anchor)
    pair. With ``clip_to_box`` the square is intersected with the gt box (OTA);
    without, it may reach outside the box (YOLOX).
    """
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (radius * strides)[None, :, None]
    lower = centres[:, None, :] - half
    upper = centres[:, None, :] + half
    if clip_to_box:
        lower = jnp.maximum(lower, boxes[:, None, :2])
        upper = jnp.minimum(upper, boxes[:, None, 2:])
    return jnp.concatenate([lower, upper], axis=-1)


def inside_centre_regions(
    points: Array, strides: Array, boxes: Array, radius: float, *, clip_to_box: bool = False
) -> Array:
    """``[M, A]``: the point lies strictly inside the gt's centre region (see `centre_regions`)."""
    regions = centre_regions(boxes, strides, radius, clip_to_box=clip_to_box)
    return _min_distance(points, regions) > 0.0
