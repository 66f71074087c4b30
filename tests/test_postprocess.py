"""Decoding and NMS against a plain NumPy greedy NMS."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ota_jax.detector.model import FCOSOutput
from ota_jax.detector.postprocess import (
    PostprocessConfig,
    detection_scores,
    nms,
    postprocess,
)


def _np_iou(box, boxes):
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area = lambda b: (
        np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    )
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def np_greedy_nms(boxes, scores, iou_threshold, classes=None, valid=None):
    """Textbook greedy NMS: indices kept, by descending score (stable on ties)."""
    valid = np.ones(len(scores), bool) if valid is None else valid
    order = [i for i in np.argsort(-scores, kind="stable") if valid[i]]
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        ious = _np_iou(boxes[i], boxes[order]) if order else np.zeros(0)
        same = np.ones(len(order), bool) if classes is None else classes[order] == classes[i]
        order = [j for j, s in zip(order, (ious > iou_threshold) & same, strict=True) if not s]
    return np.array(keep, np.int64)


def _random_boxes(rng, num, size=100.0):
    centre = rng.uniform(0, size, (num, 2))
    wh = rng.uniform(5, 40, (num, 2))
    return np.concatenate([centre - wh / 2, centre + wh / 2], 1).astype(np.float32)


@partial(jax.jit, static_argnames=("max_outputs", "iou_threshold", "aware"))
def _jit_nms(boxes, scores, valid, classes, *, max_outputs, iou_threshold, aware):
    return nms(
        boxes,
        scores,
        iou_threshold=iou_threshold,
        max_outputs=max_outputs,
        valid=valid,
        classes=classes if aware else None,
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("class_aware", [False, True])
def test_nms_matches_numpy_greedy(seed, class_aware):
    rng = np.random.default_rng(seed)
    num = 200
    boxes = _random_boxes(rng, num)
    scores = rng.uniform(size=num).astype(np.float32)
    classes = rng.integers(0, 3, num).astype(np.int32)
    valid = rng.uniform(size=num) < 0.8
    threshold = float(rng.choice([0.3, 0.5, 0.7]))
    want = np_greedy_nms(boxes, scores, threshold, classes if class_aware else None, valid)

    indices, kept = _jit_nms(
        boxes, scores, valid, classes, max_outputs=num, iou_threshold=threshold, aware=class_aware
    )
    np.testing.assert_array_equal(np.asarray(indices)[np.asarray(kept)], want)

    # A small static output size keeps the first (best) ones.
    indices, kept = _jit_nms(
        boxes, scores, valid, classes, max_outputs=10, iou_threshold=threshold, aware=class_aware
    )
    assert kept.shape == (10,)
    np.testing.assert_array_equal(np.asarray(indices)[np.asarray(kept)], want[:10])


def test_nms_with_nothing_valid_keeps_nothing():
    boxes = _random_boxes(np.random.default_rng(0), 5)
    indices, kept = nms(
        jnp.asarray(boxes), jnp.ones(5), iou_threshold=0.5, max_outputs=3, valid=jnp.zeros(5, bool)
    )
    assert indices.shape == (3,) and not np.any(kept)


def test_nms_of_identical_boxes_keeps_the_best():
    boxes = jnp.tile(jnp.array([[0.0, 0.0, 10.0, 10.0]]), (4, 1))
    indices, kept = nms(boxes, jnp.array([0.1, 0.9, 0.5, 0.9]), iou_threshold=0.5, max_outputs=4)
    np.testing.assert_array_equal(np.asarray(indices)[np.asarray(kept)], [1])


def test_postprocess_scores_threshold_classes_and_clipping():
    # Two anchors, two classes. Anchor 0: class 1 confident; anchor 1 overlaps it
    # (same class suppressed, other class kept); anchor 2: below threshold.
    big = 8.0
    cls_logits = jnp.array([[[-big, 2.0], [1.0, 1.5], [-big, -big]]])
    iou_logits = jnp.array([[big, big, big]])
    pred_boxes = jnp.array(
        [[[-5.0, 0.0, 20.0, 20.0], [0.0, 1.0, 20.0, 21.0], [30.0, 30.0, 40.0, 40.0]]]
    )
    outputs = FCOSOutput(cls_logits, pred_boxes, iou_logits, jnp.zeros((1, 3, 4)))
    config = PostprocessConfig(
        score_threshold=0.05, pre_nms_topk=6, nms_iou_threshold=0.6, max_detections=4
    )
    det = jax.jit(partial(postprocess, config=config, image_size=(32, 32)))(outputs)
    assert det.boxes.shape == (1, 4, 4) and det.scores.shape == (1, 4)
    assert det.classes.dtype == jnp.int32 and det.valid.dtype == jnp.bool_

    expected = np.sqrt(jax.nn.sigmoid(cls_logits) * jax.nn.sigmoid(iou_logits)[..., None])
    np.testing.assert_allclose(detection_scores(cls_logits, iou_logits), expected, rtol=1e-6)
    # Kept: (anchor 0, class 1), (anchor 1, class 0); (anchor 1, class 1) is suppressed.
    np.testing.assert_array_equal(det.valid[0], [True, True, False, False])
    np.testing.assert_array_equal(det.classes[0], [1, 0, -1, -1])
    np.testing.assert_allclose(det.scores[0, :2], [expected[0, 0, 1], expected[0, 1, 0]], rtol=1e-6)
    np.testing.assert_allclose(det.boxes[0, :2], [[0, 0, 20, 20], [0, 1, 20, 21]])
    assert np.all(np.asarray(det.boxes[0, 2:]) == 0) and np.all(np.asarray(det.scores[0, 2:]) == 0)
