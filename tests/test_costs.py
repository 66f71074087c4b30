"""Pairwise costs against the naive ``[M, A, C]`` formulas (optax for the focal loss)."""

import numpy as np
import optax
import pytest

from ota_jax import costs

pytestmark = pytest.mark.core  # Runs at the dependency floors too (.ci/run).


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 4, (50, 6)).astype(np.float32)
    x[0] = [-90, -30, -0.0, 0.0, 30, 90]  # saturated sigmoids stay finite
    return x


def test_focal_terms_match_optax(logits):
    for target, term in ((0.0, costs.focal_loss_negative), (1.0, costs.focal_loss_positive)):
        want = optax.sigmoid_focal_loss(logits, np.full_like(logits, target), alpha=0.25, gamma=2.0)
        got = term(logits, alpha=0.25, gamma=2.0)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
        got_fractional = term(logits, alpha=0.4, gamma=1.5)
        want_fractional = optax.sigmoid_focal_loss(
            logits, np.full_like(logits, target), alpha=0.4, gamma=1.5
        )
        np.testing.assert_allclose(got_fractional, want_fractional, rtol=2e-5, atol=1e-6)


def test_focal_class_cost_equals_the_one_hot_sum(logits):
    labels = np.array([0, 5, 2, 2])
    pair, background = costs.focal_class_cost(logits, labels, alpha=0.25, gamma=2.0)
    one_hot = np.eye(6, dtype=np.float32)[labels]  # [M, C]
    naive = optax.sigmoid_focal_loss(
        np.broadcast_to(logits, (4, 50, 6)),
        np.broadcast_to(one_hot[:, None], (4, 50, 6)),
        alpha=0.25,
        gamma=2.0,
    ).sum(-1)
    np.testing.assert_allclose(pair, naive, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        background,
        optax.sigmoid_focal_loss(logits, np.zeros_like(logits), alpha=0.25, gamma=2.0).sum(-1),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("with_objectness", [False, True])
def test_bce_class_cost_equals_the_one_hot_sum_with_torch_clamp(with_objectness):
    rng = np.random.default_rng(1)
    cls_logits = rng.normal(0, 3, (30, 5)).astype(np.float32)
    cls_logits[0, :2] = [-200.0, 200.0]  # scores 0 and 1: logs clamp at -100 as torch's do
    obj_logits = rng.normal(0, 3, 30).astype(np.float32) if with_objectness else None
    labels = np.array([1, 0, 4])
    scores = 1 / (1 + np.exp(-cls_logits.astype(np.float64)))
    if with_objectness:
        obj_logits[0] = 200.0
        scores = np.sqrt(scores / (1 + np.exp(-obj_logits.astype(np.float64)))[:, None])
    scores = scores.astype(np.float32).astype(np.float64)  # the model's float32 scores
    one_hot = np.eye(5)[labels][:, None]  # [M, 1, C]
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(scores), -100)
        log_q = np.maximum(np.log1p(-scores), -100)
    naive = -(one_hot * log_p + (1 - one_hot) * log_q).sum(-1)
    got = costs.bce_class_cost(cls_logits, obj_logits, labels)
    # log1p(-p) magnifies a float32 sigmoid's rounding where p is near 1.
    np.testing.assert_allclose(got, naive, rtol=1e-4)


def test_joint_logits_are_logits_of_joint_scores(logits):
    obj = np.linspace(-8, 8, 50).astype(np.float32)
    scores = np.asarray(costs.joint_scores(logits[1:], obj[1:]), np.float64)
    joint = np.asarray(costs.joint_logits(logits[1:], obj[1:]))
    np.testing.assert_allclose(1 / (1 + np.exp(-joint)), scores, rtol=1e-4, atol=1e-7)
