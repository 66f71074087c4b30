"""Box formats and box overlaps.

Inside the library boxes are ``xyxy``: ``[x1, y1, x2, y2]`` float32 pixels with
``x1 <= x2`` and ``y1 <= y2`` for a valid box. Converters cover YOLOX's
``cxcywh`` and TFDS's normalised ``[ymin, xmin, ymax, xmax]``.

Every function works on any leading batch shape ``[..., 4]``. Degenerate boxes
(zero or negative width or height) have area 0 and IoU 0 with everything; no
function here returns NaN for finite input.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

__all__ = [
    "box_area",
    "cxcywh_to_xyxy",
    "elementwise_giou",
    "elementwise_iou",
    "pairwise_giou",
    "pairwise_iou",
    "xyxy_to_cxcywh",
    "xyxy_to_yxyx_normalized",
    "yxyx_normalized_to_xyxy",
]

# Smallest union/enclosure area we divide by; keeps IoU finite for empty boxes.
_AREA_EPS = 1e-9


def cxcywh_to_xyxy(boxes: ArrayLike) -> Array:
    """``[..., 4]`` centre-size boxes (YOLOX) to ``[..., 4]`` corner boxes."""
    boxes = jnp.asarray(boxes)
    centre, size = boxes[..., :2], boxes[..., 2:]
    return jnp.concatenate([centre - size / 2, centre + size / 2], axis=-1)


def xyxy_to_cxcywh(boxes: ArrayLike) -> Array:
    """``[..., 4]`` corner boxes to ``[..., 4]`` centre-size boxes."""
    boxes = jnp.asarray(boxes)
    top_left, bottom_right = boxes[..., :2], boxes[..., 2:]
    return jnp.concatenate([(top_left + bottom_right) / 2, bottom_right - top_left], axis=-1)


def yxyx_normalized_to_xyxy(boxes: ArrayLike, height: ArrayLike, width: ArrayLike) -> Array:
    """TFDS ``[..., 4]`` ``[ymin, xmin, ymax, xmax]`` in ``[0, 1]`` to xyxy pixels."""
    boxes = jnp.asarray(boxes, jnp.float32)
    scale = jnp.stack([width, height, width, height]).astype(jnp.float32)
    return boxes[..., jnp.array([1, 0, 3, 2])] * scale


def xyxy_to_yxyx_normalized(boxes: ArrayLike, height: ArrayLike, width: ArrayLike) -> Array:
    """xyxy pixels to TFDS's normalised ``[ymin, xmin, ymax, xmax]``."""
    boxes = jnp.asarray(boxes, jnp.float32)
    scale = jnp.stack([width, height, width, height]).astype(jnp.float32)
    return (boxes / scale)[..., jnp.array([1, 0, 3, 2])]


def box_area(boxes: ArrayLike) -> Array:
    """``[...]`` area of ``[..., 4]`` xyxy boxes; 0 for degenerate boxes."""
    boxes = jnp.asarray(boxes)
    width = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    height = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return width * height


def _overlap(a: Array, b: Array) -> tuple[Array, Array]:
    """Intersection and union areas of broadcastable ``[..., 4]`` boxes."""
    top_left = jnp.maximum(a[..., :2], b[..., :2])
    bottom_right = jnp.minimum(a[..., 2:], b[..., 2:])
    inter_size = jnp.maximum(bottom_right - top_left, 0.0)
    inter = inter_size[..., 0] * inter_size[..., 1]
    union = box_area(a) + box_area(b) - inter
    return inter, union


def _enclosing_area(a: Array, b: Array) -> Array:
    top_left = jnp.minimum(a[..., :2], b[..., :2])
    bottom_right = jnp.maximum(a[..., 2:], b[..., 2:])
    size = jnp.maximum(bottom_right - top_left, 0.0)
    return size[..., 0] * size[..., 1]


def elementwise_iou(a: ArrayLike, b: ArrayLike) -> Array:
    """IoU of broadcastable ``[..., 4]`` xyxy boxes, pair by pair: ``[...]``."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    inter, union = _overlap(a, b)
    return inter / jnp.maximum(union, _AREA_EPS)


def elementwise_giou(a: ArrayLike, b: ArrayLike) -> Array:
    """Generalised IoU (Rezatofighi et al. 2019) of broadcastable boxes: ``[...]``."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    inter, union = _overlap(a, b)
    iou = inter / jnp.maximum(union, _AREA_EPS)
    enclosing = _enclosing_area(a, b)
    return iou - (enclosing - union) / jnp.maximum(enclosing, _AREA_EPS)


def pairwise_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> Array:
    """IoU of every box in ``boxes1 [N, 4]`` with every box in ``boxes2 [K, 4]``: ``[N, K]``.

    >>> import jax.numpy as jnp
    >>> pairwise_iou(jnp.array([[0., 0., 2., 2.]]), jnp.array([[1., 0., 3., 2.]]))
    Array([[0.33333334]], dtype=float32)
    """
    boxes1, boxes2 = jnp.asarray(boxes1), jnp.asarray(boxes2)
    return elementwise_iou(boxes1[:, None, :], boxes2[None, :, :])


def pairwise_giou(boxes1: ArrayLike, boxes2: ArrayLike) -> Array:
    """GIoU of every box in ``boxes1 [N, 4]`` with every box in ``boxes2 [K, 4]``: ``[N, K]``."""
    boxes1, boxes2 = jnp.asarray(boxes1), jnp.asarray(boxes2)
    return elementwise_giou(boxes1[:, None, :], boxes2[None, :, :])
