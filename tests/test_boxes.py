import numpy as np
import pytest

from ota_jax import anchors, boxes

pytestmark = pytest.mark.core  # Needs only the core dependencies.


def _iou_loop(a, b):
    """Plain Python IoU and GIoU of two xyxy boxes."""
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    area = lambda r: max(r[2] - r[0], 0.0) * max(r[3] - r[1], 0.0)
    inter = iw * ih
    union = area(a) + area(b) - inter
    iou = inter / union if union > 0 else 0.0
    ew = max(a[2], b[2]) - min(a[0], b[0])
    eh = max(a[3], b[3]) - min(a[1], b[1])
    enclosing = max(ew, 0.0) * max(eh, 0.0)
    giou = iou - (enclosing - union) / enclosing if enclosing > 0 else iou
    return iou, giou


def test_pairwise_iou_and_giou_match_a_loop():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 50, (12, 2))
    b1 = np.concatenate([corners, corners + rng.uniform(-5, 30, (12, 2))], 1)  # some inverted
    b2 = np.concatenate([corners[:7] + 3, corners[:7] + rng.uniform(0, 30, (7, 2))], 1)
    iou, giou = np.asarray(boxes.pairwise_iou(b1, b2)), np.asarray(boxes.pairwise_giou(b1, b2))
    for i in range(12):
        for j in range(7):
            want_iou, want_giou = _iou_loop(b1[i], b2[j])
            assert iou[i, j] == pytest.approx(want_iou, abs=1e-5)
            assert giou[i, j] == pytest.approx(want_giou, abs=1e-5)


def test_degenerate_boxes_have_zero_iou_and_no_nan():
    zero = np.zeros((3, 4), np.float32)
    assert np.all(np.asarray(boxes.pairwise_iou(zero, zero)) == 0)
    assert np.all(np.isfinite(np.asarray(boxes.pairwise_giou(zero, zero))))


def test_format_round_trips():
    rng = np.random.default_rng(1)
    xyxy = np.sort(rng.uniform(0, 100, (5, 2, 2)), axis=1).transpose(0, 2, 1).reshape(5, 4)
    xyxy = xyxy[:, [0, 2, 1, 3]]
    np.testing.assert_allclose(boxes.cxcywh_to_xyxy(boxes.xyxy_to_cxcywh(xyxy)), xyxy, atol=1e-4)
    yxyx = boxes.xyxy_to_yxyx_normalized(xyxy, 100.0, 200.0)
    np.testing.assert_allclose(yxyx[:, 0], xyxy[:, 1] / 100.0, rtol=1e-6)
    np.testing.assert_allclose(yxyx[:, 1], xyxy[:, 0] / 200.0, rtol=1e-6)
    np.testing.assert_allclose(boxes.yxyx_normalized_to_xyxy(yxyx, 100.0, 200.0), xyxy, rtol=1e-5)


def test_anchor_points_are_level_major_cell_centres():
    points, strides = anchors.anchor_points((40, 24), (8, 16))
    assert anchors.feature_sizes((40, 24), (8, 16)) == ((5, 3), (3, 2))
    assert points.shape == (5 * 3 + 3 * 2, 2)
    np.testing.assert_array_equal(points[:4], [[4, 4], [12, 4], [20, 4], [4, 12]])
    np.testing.assert_array_equal(points[15], [8, 8])
    np.testing.assert_array_equal(strides, [8] * 15 + [16] * 6)
    corner, _ = anchors.anchor_points((16, 16), (8,), offset=0.0)
    np.testing.assert_array_equal(corner, [[0, 0], [8, 0], [0, 8], [8, 8]])
