"""Sanity tests of the NumPy reference itself (benchmarks/reference.py)."""

from __future__ import annotations

import numpy as np
import ot
import pytest

from benchmarks.reference import (
    ota_decode,
    ota_reference,
    simota_matching,
    simota_reference,
    sinkhorn_official,
)

pytestmark = pytest.mark.core  # Needs only the core dependencies.


def make_case(seed, num_gt=3, num_classes=5, size=64, strides=(8, 16)):
    """Random one-image case: anchor points of a ``size`` x ``size`` image at ``strides``."""
    rng = np.random.default_rng(seed)
    points, anchor_strides = [], []
    for s in strides:
        n = size // s
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        points.append(np.stack([(xs.ravel() + 0.5) * s, (ys.ravel() + 0.5) * s], axis=-1))
        anchor_strides.append(np.full(n * n, float(s)))
    points = np.concatenate(points)
    anchor_strides = np.concatenate(anchor_strides)
    num_anchors = points.shape[0]
    half_wh = rng.uniform(2.0, 20.0, (num_anchors, 2))
    centres = points + rng.normal(0.0, 3.0, (num_anchors, 2))
    pred_boxes = np.concatenate([centres - half_wh, centres + half_wh], axis=-1)
    gt_centres = rng.uniform(10.0, size - 10.0, (num_gt, 2))
    gt_half = rng.uniform(3.0, 20.0, (num_gt, 2))
    gt_boxes = np.clip(np.concatenate([gt_centres - gt_half, gt_centres + gt_half], -1), 0, size)
    return {
        "pred_boxes": pred_boxes,
        "cls_logits": rng.normal(0.0, 2.0, (num_anchors, num_classes)),
        "points": points,
        "strides": anchor_strides,
        "gt_boxes": gt_boxes,
        "gt_labels": rng.integers(0, num_classes, num_gt),
    }, rng.normal(0.0, 2.0, num_anchors)


# ---------------------------------------------------------------- Sinkhorn
def _small_problem(seed, supplies=(2, 1, 3)):
    rng = np.random.default_rng(seed)
    num_anchors = 10
    mu = np.array([*supplies, num_anchors - sum(supplies)], dtype=np.float64)
    nu = np.ones(num_anchors)
    cost = rng.uniform(0.0, 3.0, (mu.shape[0], num_anchors))
    return mu, nu, cost


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sinkhorn_converges_to_pot_sinkhorn_log(seed):
    mu, nu, cost = _small_problem(seed)
    epsilon = 0.5
    plan, _, _ = sinkhorn_official(mu, nu, cost, epsilon, num_iters=2000)
    expected = ot.bregman.sinkhorn_log(mu, nu, cost, epsilon, numItermax=100000, stopThr=1e-13)
    np.testing.assert_allclose(plan, expected, atol=1e-6)
    np.testing.assert_allclose(plan.sum(axis=1), mu, atol=1e-6)
    np.testing.assert_allclose(plan.sum(axis=0), nu, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sinkhorn_small_epsilon_decodes_like_emd(seed):
    mu, nu, cost = _small_problem(seed)
    plan, _, _ = sinkhorn_official(mu, nu, cost, 0.01, num_iters=5000)
    exact = ot.emd(mu, nu, cost)
    np.testing.assert_array_equal(ota_decode(plan), np.argmax(exact, axis=0))


def test_sinkhorn_first_iteration_by_hand():
    """One official iteration on a 2 x 2 problem, written out by hand."""
    mu = np.array([1.0, 1.0])
    nu = np.array([1.0, 1.0])
    cost = np.array([[0.0, 1.0], [2.0, 0.5]])
    eps = 0.5
    plan, u, v = sinkhorn_official(mu, nu, cost, eps, num_iters=1)
    u0 = np.ones(2)
    v1 = np.array(
        [
            eps * np.log(1 + 1e-8)
            - eps * np.log(np.exp((u0[0] - cost[0, j]) / eps) + np.exp((u0[1] - cost[1, j]) / eps))
            for j in range(2)
        ]
    )
    u1 = np.array(
        [
            eps * np.log(1 + 1e-8)
            - eps * np.log(np.exp((v1[0] - cost[i, 0]) / eps) + np.exp((v1[1] - cost[i, 1]) / eps))
            for i in range(2)
        ]
    )
    np.testing.assert_allclose(v, v1, rtol=1e-12)
    np.testing.assert_allclose(u, u1, rtol=1e-12)
    np.testing.assert_allclose(plan, np.exp((u1[:, None] + v1[None, :] - cost) / eps))


# --------------------------------------------------------------------- OTA
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ota_converged_matches_pot(seed):
    """Run to convergence, OTA's plan is POT's entropic plan for the same cost and supplies."""
    case, _ = make_case(seed, num_gt=3)
    # epsilon 0.5: at 0.1 some of these problems need > 1e5 iterations to converge
    out = ota_reference(**case, epsilon=0.5, num_iters=1000)
    num_anchors = case["points"].shape[0]
    expected = ot.bregman.sinkhorn_log(
        out["mu"], np.ones(num_anchors), out["sinkhorn_cost"], 0.5, numItermax=100000, stopThr=1e-13
    )
    np.testing.assert_allclose(out["plan"], expected, atol=1e-6)
    num_gt = case["gt_boxes"].shape[0]
    np.testing.assert_array_equal(
        np.where(out["gt_index"] < 0, num_gt, out["gt_index"]), ota_decode(expected)
    )


@pytest.mark.parametrize("use_obj", [False, True])
def test_ota_outputs_are_consistent(use_obj):
    case, obj = make_case(7, num_gt=4)
    out = ota_reference(**case, obj_logits=obj if use_obj else None)
    num_anchors = case["points"].shape[0]
    num_gt = case["gt_boxes"].shape[0]
    assert out["plan"].shape == out["cost"].shape == (num_gt + 1, num_anchors)
    assert np.all(np.isfinite(out["plan"]))
    np.testing.assert_allclose(out["plan"].sum(axis=1), out["mu"], rtol=1e-3)
    assert np.all(out["dynamic_k"] >= 1)
    assert out["mu"][-1] == num_anchors - out["dynamic_k"].sum()
    fg = out["gt_index"] >= 0
    np.testing.assert_array_equal(out["labels"][fg], case["gt_labels"][out["gt_index"][fg]])
    assert np.all(out["labels"][~fg] == -1)
    assert np.all(out["ious"][~fg] == 0)
    np.testing.assert_allclose(
        out["ious"][fg], out["iou_matrix"][out["gt_index"][fg], np.nonzero(fg)[0]]
    )
    # positives only where the pair is a candidate (the 1e6 penalty keeps them out)
    assert np.all(out["candidate_mask"][out["gt_index"][fg], np.nonzero(fg)[0]])
    # the shifted cost differs from the official one by a constant per gt row only
    diff = out["cost"] - out["sinkhorn_cost"]
    np.testing.assert_allclose(diff, np.repeat(diff[:, :1], num_anchors, axis=1))
    assert np.all(diff[-1] == 0)


def test_ota_no_gt_is_all_background():
    case, _ = make_case(3, num_gt=0)
    out = ota_reference(**case)
    assert np.all(out["gt_index"] == -1)
    assert out["dynamic_k"].shape == (0,)
    assert out["plan"].shape == (1, case["points"].shape[0])


def test_ota_tiny_gt_still_ships_its_supply():
    """A gt box between anchor centres has no candidate, k = 1, and still gets one anchor."""
    case, _ = make_case(4, num_gt=1)
    case["gt_boxes"] = np.array([[1.0, 1.0, 3.0, 3.0]])
    for shift in (True, False):
        out = ota_reference(**case, subtract_row_min=shift)
        assert not out["candidate_mask"].any()
        assert out["dynamic_k"].tolist() == [1]
        np.testing.assert_allclose(out["plan"][0].sum(), 1.0, rtol=1e-6)
        assert (out["gt_index"] == 0).sum() == 1


def test_ota_candidate_mask_by_hand():
    # gt [0, 0, 64, 64], centre (32, 32); stride 8, radius 2.5 -> square (12, 52) clipped.
    points = np.array([[32.0, 32.0], [13.0, 32.0], [12.0, 32.0], [0.005, 32.0], [51.9, 51.9]])
    case = {
        "pred_boxes": np.tile([[0.0, 0.0, 64.0, 64.0]], (5, 1)),
        "cls_logits": np.zeros((5, 2)),
        "points": points,
        "strides": np.full(5, 8.0),
        "gt_boxes": np.array([[0.0, 0.0, 64.0, 64.0]]),
        "gt_labels": np.array([1]),
    }
    out = ota_reference(**case)
    assert out["candidate_mask"][0].tolist() == [True, True, False, False, True]


# ------------------------------------------------------------------ SimOTA
def test_simota_matching_quirk_by_hand():
    cost = np.array(
        [
            [1.0, 5.0, 9.0],  # k = 1 -> col 0
            [2.0, 1.0, 9.0],  # k = 2 -> cols 1, 0
            [0.5, 9.0, 0.1],  # k = 1 -> col 2; yet it has the lowest cost for col 0
        ]
    )
    matching, selected = simota_matching(cost, np.array([1, 2, 1]))
    assert selected.tolist() == [[True, False, False], [True, True, False], [False, False, True]]
    # col 0 is wanted by gts 0 and 1, and goes to gt 2 (lowest cost over ALL gts)
    assert matching.tolist() == [[False, False, False], [False, True, False], [True, False, True]]


def test_simota_matching_ties_take_lower_index():
    matching, _ = simota_matching(np.array([[3.0, 1.0, 1.0, 1.0]]), np.array([2]))
    assert matching.tolist() == [[False, True, True, False]]


def _simota_hand_case():
    # One gt [0, 0, 32, 32] (centre (16, 16)); stride 8, radius 1.5 -> region (4, 28)^2.
    points = np.array([[16.0, 16.0], [12.0, 16.0], [20.0, 16.0], [16.0, 20.0], [100.0, 100.0]])
    pred_boxes = np.array(
        [
            [0.0, 0.0, 32.0, 32.0],  # IoU 1
            [0.0, 0.0, 32.0, 16.0],  # IoU 0.5
            [0.0, 0.0, 16.0, 32.0],  # IoU 0.5 (ties with anchor 1 -> anchor 1 wins)
            [0.0, 0.0, 16.0, 16.0],  # IoU 0.25
            [0.0, 0.0, 32.0, 32.0],  # IoU 1 but outside the prefilter: takes no part
        ]
    )
    return {
        "pred_boxes": pred_boxes,
        "cls_logits": np.zeros((5, 3)),
        "points": points,
        "strides": np.full(5, 8.0),
        "gt_boxes": np.array([[0.0, 0.0, 32.0, 32.0]]),
        "gt_labels": np.array([2]),
    }


def test_simota_by_hand():
    out = simota_reference(**_simota_hand_case())
    assert out["prefilter"].tolist() == [True, True, True, True, False]
    assert out["dynamic_k"].tolist() == [2]  # int(1 + 0.5 + 0.5 + 0.25); anchor 4 excluded
    assert out["gt_index"].tolist() == [0, 0, -1, -1, -1]
    assert out["labels"].tolist() == [2, 2, -1, -1, -1]
    np.testing.assert_allclose(out["ious"], [1.0, 0.5, 0.0, 0.0, 0.0])
    # cost: 3 classes at p = 0.5 -> 3 log 2, plus 3 * -log(IoU + 1e-8)
    np.testing.assert_allclose(out["cost"][0, 0], 3 * np.log(2) - 3 * np.log(1 + 1e-8))
    np.testing.assert_allclose(out["cost"][0, 1], 3 * np.log(2) - 3 * np.log(0.5 + 1e-8))
    assert np.isinf(out["cost"][0, 4])


def test_simota_box_and_center_prior_by_hand():
    # Same case with prior="box_and_center": anchor 4 is still outside box and region.
    out = simota_reference(
        **_simota_hand_case(), prior="box_and_center", center_radius=2.5, penalty=1e5
    )
    assert out["prefilter"].tolist() == [True, True, True, True, False]
    assert out["gt_index"].tolist() == [0, 0, -1, -1, -1]


def test_simota_obj_score_and_log_clamp():
    case = _simota_hand_case()
    case["cls_logits"] = np.full((5, 3), -1000.0)  # p = 0 -> log clamped at -100
    out = simota_reference(**case, obj_logits=np.zeros(5))
    np.testing.assert_allclose(out["cost"][0, 0], 100.0 - 3 * np.log(1 + 1e-8))


@pytest.mark.parametrize("prior", ["center", "box_and_center"])
@pytest.mark.parametrize("use_obj", [False, True])
def test_simota_outputs_are_consistent(prior, use_obj):
    case, obj = make_case(11, num_gt=4)
    out = simota_reference(**case, prior=prior, obj_logits=obj if use_obj else None)
    fg = out["gt_index"] >= 0
    assert np.all(out["prefilter"][fg])
    assert np.all(out["dynamic_k"] >= 1)
    np.testing.assert_array_equal(out["labels"][fg], case["gt_labels"][out["gt_index"][fg]])
    np.testing.assert_allclose(
        out["ious"][fg], out["iou_matrix"][out["gt_index"][fg], np.nonzero(fg)[0]]
    )
    assert np.all(out["ious"][~fg] == 0)
    assert fg.sum() <= out["dynamic_k"].sum()


def test_simota_no_gt_and_no_prefiltered_anchor():
    case, _ = make_case(5, num_gt=0)
    out = simota_reference(**case)
    assert np.all(out["gt_index"] == -1)
    assert out["cost"].shape == (0, case["points"].shape[0])
    case, _ = make_case(5, num_gt=1)
    case["points"] = case["points"] + 1000.0  # every anchor far from the gt
    out = simota_reference(**case)
    assert not out["prefilter"].any()
    assert np.all(out["gt_index"] == -1)
    assert out["dynamic_k"].tolist() == [1]
