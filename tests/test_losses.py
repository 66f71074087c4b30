"""OTA losses against straightforward NumPy formulas; edge cases; gradients."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ota_jax
from ota_jax.anchors import anchor_points
from ota_jax.assigners import ASSIGNERS
from ota_jax.assignment import Assignment
from ota_jax.detector.losses import (
    LossConfig,
    assign_targets,
    detection_loss,
    losses_from_assignment,
    resolve_assigner,
)
from ota_jax.detector.model import FCOSOutput, decode_ltrb

IMAGE = (64, 64)
STRIDES = (8, 16, 32)
NUM_CLASSES = 4
BATCH = 2


def _outputs(seed: int) -> FCOSOutput:
    """Random but plausible head outputs for a batch of 64x64 images."""
    rng = np.random.default_rng(seed)
    points, strides = anchor_points(IMAGE, STRIDES)
    num_anchors = points.shape[0]
    ltrb = rng.uniform(0.5, 2.5, (BATCH, num_anchors, 4)).astype(np.float32)
    ltrb *= np.asarray(strides)[None, :, None]
    return FCOSOutput(
        cls_logits=jnp.asarray(
            rng.normal(-2.0, 1.5, (BATCH, num_anchors, NUM_CLASSES)), jnp.float32
        ),
        pred_boxes=decode_ltrb(points, jnp.asarray(ltrb)),
        iou_logits=jnp.asarray(rng.normal(0.0, 1.0, (BATCH, num_anchors)), jnp.float32),
        ltrb=jnp.asarray(ltrb),
    )


def _batch() -> dict[str, np.ndarray]:
    return {
        "gt_boxes": np.array(
            [
                [[6, 8, 40, 36], [30, 24, 62, 60], [0, 0, 0, 0]],
                [[10, 10, 30, 50], [0, 0, 0, 0], [0, 0, 0, 0]],
            ],
            np.float32,
        ),
        "gt_labels": np.array([[1, 3, -1], [0, -1, -1]], np.int32),
        "gt_mask": np.array([[True, True, False], [True, False, False]]),
    }


def _random_assignment(outputs: FCOSOutput, seed: int, fg_rate: float = 0.1) -> Assignment:
    rng = np.random.default_rng(seed)
    shape = outputs.iou_logits.shape
    fg = rng.uniform(size=shape) < fg_rate
    labels = np.where(fg, rng.integers(0, NUM_CLASSES, shape), -1).astype(np.int32)
    centre = rng.uniform(10, 54, (*shape, 2))
    size = rng.uniform(4, 30, (*shape, 2))
    targets = np.where(
        fg[..., None], np.concatenate([centre - size / 2, centre + size / 2], -1), 0.0
    ).astype(np.float32)
    ious = np.where(fg, rng.uniform(0.05, 0.9, shape), 0.0).astype(np.float32)
    return Assignment(
        gt_index=np.where(fg, 0, -1).astype(np.int32),
        fg_mask=fg,
        labels=labels,
        box_targets=targets,
        ious=ious,
        num_fg=fg.sum(-1).astype(np.int32),
        dynamic_k=np.zeros((BATCH, 1), np.int32),
    )


# ---- NumPy references (float64) ---------------------------------------------------------------


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np_focal(logits, targets, alpha=0.25, gamma=2.0):
    p = _np_sigmoid(logits)
    ce = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


def _np_giou(a, b):
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    union = area(a) + area(b) - inter
    enclose = (np.maximum(a[:, 2], b[:, 2]) - np.minimum(a[:, 0], b[:, 0])) * (
        np.maximum(a[:, 3], b[:, 3]) - np.minimum(a[:, 1], b[:, 1])
    )
    return inter / union - (enclose - union) / enclose


def _np_bce(logits, targets):
    p = _np_sigmoid(logits)
    return -(targets * np.log(p) + (1 - targets) * np.log(1 - p))


def _np_losses(outputs: FCOSOutput, assignment: Assignment, anchor_mask=None, box_loss="giou"):
    cls = np.asarray(outputs.cls_logits, np.float64)
    fg = np.asarray(assignment.fg_mask)
    labels = np.asarray(assignment.labels)
    onehot = np.zeros_like(cls)
    onehot[fg, labels[fg]] = 1.0
    focal = _np_focal(cls, onehot).sum(-1)
    if anchor_mask is not None:
        focal = focal * anchor_mask
    if assignment.ignore_mask is not None:
        focal = focal * ~np.asarray(assignment.ignore_mask)
    num_pos = max(fg.sum(), 1)
    t = np.asarray(assignment.ious, np.float64)[fg]
    pred = np.asarray(outputs.pred_boxes, np.float64)[fg]
    target = np.asarray(assignment.box_targets, np.float64)[fg]
    giou = _np_giou(pred, target)
    bce = _np_bce(np.asarray(outputs.iou_logits, np.float64)[fg], t)
    return {
        "loss_cls": focal.sum() / num_pos,
        # The official HEAD: 2 * sum(1 - GIoU) / max(1, num_fg); its first commit
        # weighted each term by the IoU target t and divided by max(1, sum(t)).
        "loss_box": (
            2.0 * (1 - giou).sum() / num_pos
            if box_loss == "giou"
            else 2.0 * ((1 - giou) * t).sum() / max(t.sum(), 1.0)
        ),
        "loss_iou": 0.5 * bce.sum() / num_pos,
        "num_pos": fg.sum(),
        "mean_pos_iou": t.sum() / num_pos,
    }


# ---- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("box_loss", ["giou", "iou_weighted_giou"])
@pytest.mark.parametrize("seed", [0, 1])
def test_losses_match_numpy(seed, box_loss):
    outputs = _outputs(seed)
    assignment = _random_assignment(outputs, seed + 10)
    config = LossConfig(box_loss=box_loss)
    got = jax.jit(losses_from_assignment, static_argnames="config")(
        outputs, assignment, config=config
    )
    want = _np_losses(outputs, assignment, box_loss=box_loss)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=2e-5, err_msg=name)


def test_the_official_head_box_loss_is_the_default():
    """Mean GIoU loss over positives, unweighted: the same whatever the IoU targets."""
    assert LossConfig().box_loss == "giou"
    outputs = _outputs(5)
    assignment = _random_assignment(outputs, 6)
    scaled = assignment._replace(ious=assignment.ious * 0.1)
    a = losses_from_assignment(outputs, assignment)["loss_box"]
    b = losses_from_assignment(outputs, scaled)["loss_box"]
    np.testing.assert_allclose(a, b, rtol=1e-6)
    weighted = LossConfig(box_loss="iou_weighted_giou")
    c = losses_from_assignment(outputs, assignment, config=weighted)["loss_box"]
    assert abs(float(c) - float(a)) > 1e-3
    with pytest.raises(ValueError, match="box_loss"):
        LossConfig(box_loss="iou")


def test_anchor_mask_removes_anchors_from_class_loss():
    outputs = _outputs(2)
    assignment = _random_assignment(outputs, 3)
    mask = np.random.default_rng(4).uniform(size=outputs.iou_logits.shape) < 0.7
    got = losses_from_assignment(outputs, assignment, anchor_mask=jnp.asarray(mask))
    np.testing.assert_allclose(
        got["loss_cls"], _np_losses(outputs, assignment, mask)["loss_cls"], rtol=2e-5
    )


def test_ignored_anchors_leave_the_class_loss_only():
    outputs = _outputs(12)
    assignment = _random_assignment(outputs, 13)
    rng = np.random.default_rng(14)
    ignore = (rng.uniform(size=outputs.iou_logits.shape) < 0.3) & ~np.asarray(assignment.fg_mask)
    ignored = assignment._replace(ignore_mask=jnp.asarray(ignore))
    got = losses_from_assignment(outputs, ignored)
    want = _np_losses(outputs, ignored)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=2e-5, err_msg=name)
    # Only the class loss changes, and it shrinks.
    plain = losses_from_assignment(outputs, assignment)
    assert float(got["loss_cls"]) < float(plain["loss_cls"])
    np.testing.assert_allclose(got["loss_box"], plain["loss_box"], rtol=1e-6)


def test_loss_weights_are_configurable():
    outputs = _outputs(5)
    assignment = _random_assignment(outputs, 6)
    base = losses_from_assignment(outputs, assignment)
    scaled = losses_from_assignment(
        outputs, assignment, config=LossConfig(box_weight=1.0, iou_weight=1.0)
    )
    np.testing.assert_allclose(scaled["loss_box"], base["loss_box"] / 2, rtol=1e-6)
    np.testing.assert_allclose(scaled["loss_iou"], base["loss_iou"] * 2, rtol=1e-6)


def test_zero_positives_gives_finite_loss_and_gradients():
    outputs = _outputs(7)
    assignment = _random_assignment(outputs, 8, fg_rate=0.0)
    parts = losses_from_assignment(outputs, assignment)
    assert float(parts["num_pos"]) == 0.0
    assert float(parts["loss_box"]) == 0.0 and float(parts["loss_iou"]) == 0.0
    # With no positive, the class loss is the plain sum (normaliser clamped at 1).
    np.testing.assert_allclose(
        parts["loss_cls"], _np_losses(outputs, assignment)["loss_cls"], rtol=2e-5
    )

    empty = {k: v.copy() for k, v in _batch().items()}
    empty["gt_mask"][:] = False
    points, strides = anchor_points(IMAGE, STRIDES)
    loss_fn = lambda o: detection_loss(o, points, strides, empty)[0]
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(outputs)
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_non_finite_background_predictions_do_not_poison_gradients():
    outputs = _outputs(9)
    assignment = _random_assignment(outputs, 10)
    background = np.argwhere(~np.asarray(assignment.fg_mask))[0]
    bad = np.array(outputs.pred_boxes)
    bad[tuple(background)] = [np.inf, np.nan, -np.inf, np.nan]
    outputs = outputs._replace(pred_boxes=jnp.asarray(bad))
    loss_fn = lambda o: sum(
        v for k, v in losses_from_assignment(o, assignment).items() if k.startswith("loss")
    )
    grads = jax.grad(loss_fn)(outputs)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("assigner", sorted(ASSIGNERS))
def test_detection_loss_with_real_assigners(assigner):
    outputs = _outputs(11)
    batch = _batch()
    points, strides = anchor_points(IMAGE, STRIDES)
    config = LossConfig(assigner=assigner)

    def loss_fn(o):
        return detection_loss(o, points, strides, batch, config=config)

    (loss, parts), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(outputs)
    assert np.isfinite(loss)
    assert float(parts["num_pos"]) >= 3  # every real gt gets at least one anchor
    np.testing.assert_allclose(parts["pos_per_gt"], parts["num_pos"] / 3, rtol=1e-6)
    np.testing.assert_allclose(
        loss, parts["loss_cls"] + parts["loss_box"] + parts["loss_iou"], rtol=1e-6
    )
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))

    # No gradient flows through the assignment: with it held fixed, same gradients.
    assignment = assign_targets(outputs, points, strides, batch, config=config)
    fixed = lambda o: sum(
        v for k, v in losses_from_assignment(o, assignment).items() if k.startswith("loss")
    )
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(jax.grad(fixed)(outputs)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_assigner_can_be_a_callable_and_gets_the_iou_branch():
    calls = {}

    def stand_in(pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, **kw):
        calls.update(kw)
        return ota_jax.ota_assign_batch(
            pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, **kw
        )

    outputs = _outputs(12)
    points, strides = anchor_points(IMAGE, STRIDES)
    config = LossConfig(
        assigner=stand_in,
        iou_branch_as_objectness=True,
        assigner_config=ota_jax.OTAConfig(candidate_topk=5),
    )
    assign_targets(outputs, points, strides, _batch(), config=config)
    assert calls["config"] == ota_jax.OTAConfig(candidate_topk=5)
    np.testing.assert_array_equal(calls["obj_logits"], outputs.iou_logits)
    assert resolve_assigner("ota") is ota_jax.ota_assign_batch
    assert resolve_assigner("simota") is ota_jax.simota_assign_batch
    with pytest.raises(ValueError):
        resolve_assigner("hungarian")
    hash(dataclasses.replace(config))  # static under jit
