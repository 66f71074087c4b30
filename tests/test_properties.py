"""Padding, batching, gt order and empty images: properties every assigner must keep."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ota_jax
from tests.compiles import COUNTER
from tests.scenes import make_scene, padded

pytestmark = pytest.mark.core  # Needs only the core dependencies.

# Every registered assigner: (one-image function, batched function, config).
ASSIGNERS = {
    name: (getattr(ota_jax, f"{name}_assign"), spec.assign_batch, spec.config_class())
    for name, spec in ota_jax.assigners.ASSIGNERS.items()
}
ASSIGNERS["simota_box_and_center"] = (
    ota_jax.simota_assign,
    ota_jax.simota_assign_batch,
    ota_jax.SimOTAConfig(prior="box_and_center"),
)
IMAGE = (96, 96)
# A few static gt counts and paddings, so hypothesis explores values, not compilations
# (each new count compiles the one-image call again).
NUM_GTS = (1, 5, 9)
MAX_GTS = (9, 16)


def _scene(seed, num_gt):
    return make_scene(np.random.default_rng(seed), num_gt=num_gt, image_size=IMAGE)


def _call(assign, scene, boxes, labels, mask, config):
    return assign(
        scene.pred_boxes,
        scene.cls_logits,
        scene.points,
        scene.strides,
        boxes,
        labels,
        mask,
        obj_logits=scene.obj_logits,
        config=config,
    )


def _in_scene_order(result, slots):
    """gt_index with padded slots mapped back to the scene's gt numbering."""
    lookup = np.full(max(slots, default=0) + 2, -1)
    lookup[list(slots)] = np.arange(len(slots))
    gt_index = np.asarray(result.gt_index)
    return np.where(gt_index >= 0, lookup[gt_index], -1)


@pytest.mark.parametrize("name", ASSIGNERS)
@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_gt=st.sampled_from(NUM_GTS),
    max_gt=st.sampled_from(MAX_GTS),
    batch_slot=st.integers(0, 2),
)
def test_padding_and_batching_change_nothing(name, seed, num_gt, max_gt, batch_slot):
    assign, assign_batch, config = ASSIGNERS[name]
    scene = _scene(seed, num_gt)
    alone = _call(assign, scene, scene.gt_boxes, scene.gt_labels, np.ones(num_gt, bool), config)

    # The same image, its gts scattered among padding, in a batch of other images.
    rng = np.random.default_rng(seed)
    others = [_scene(seed + i + 1, 3) for i in range(2)]
    images = [*others[:batch_slot], scene, *others[batch_slot:]]
    padded_gts = [padded(s, max_gt, rng) for s in images]
    stack = lambda key: np.stack([getattr(s, key) for s in images])
    batch = assign_batch(
        stack("pred_boxes"),
        stack("cls_logits"),
        scene.points,
        scene.strides,
        *(np.stack(x) for x in list(zip(*padded_gts, strict=True))[:3]),
        obj_logits=stack("obj_logits"),
        config=config,
    )
    ours = ota_jax.Assignment(*(None if x is None else x[batch_slot] for x in batch))
    slots = padded_gts[batch_slot][3]

    np.testing.assert_array_equal(_in_scene_order(ours, slots), np.asarray(alone.gt_index))
    np.testing.assert_array_equal(np.asarray(ours.dynamic_k)[slots], alone.dynamic_k)
    assert int(ours.num_fg) == int(alone.num_fg)
    np.testing.assert_array_equal(ours.labels, alone.labels)
    np.testing.assert_allclose(ours.box_targets, alone.box_targets)
    np.testing.assert_allclose(ours.ious, alone.ious, atol=1e-6)
    unused = np.setdiff1d(np.arange(max_gt), slots)
    assert np.all(np.asarray(ours.dynamic_k)[unused] == 0)


@pytest.mark.parametrize("name", ASSIGNERS)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), data=st.data())
def test_gt_order_does_not_matter(name, seed, data):
    if name == "max_iou":
        pytest.skip("Max-IoU's low-quality matches let the later gt win an anchor (mmdet)")
    assign, _, config = ASSIGNERS[name]
    scene = _scene(seed, 9)
    order = np.array(data.draw(st.permutations(range(9))))
    mask = np.ones(9, bool)
    if isinstance(config, ota_jax.OTAConfig):
        config = ota_jax.OTAConfig(return_transport=True)
    first = _call(assign, scene, scene.gt_boxes, scene.gt_labels, mask, config)
    second = _call(assign, scene, scene.gt_boxes[order], scene.gt_labels[order], mask, config)
    back = np.where(second.gt_index >= 0, order[np.asarray(second.gt_index)], -1)
    differ = back != np.asarray(first.gt_index)
    if first.transport is None:  # The others: per-pair costs do not depend on the order
        assert not differ.any()
    else:
        # Sinkhorn sums over gts, so float32 rounding follows the gt order and may flip
        # an anchor whose two best rows (each scaled to a maximum of 1) nearly tie;
        # the reference loop would flip it just as well.
        plan = np.asarray(first.transport.plan)
        scores = np.sort(plan / plan.max(axis=1, keepdims=True), axis=0)
        near_tie = scores[-1] - scores[-2] < 1e-3
        assert not (differ & ~near_tie).any()
    np.testing.assert_array_equal(np.asarray(second.dynamic_k), np.asarray(first.dynamic_k)[order])


@pytest.mark.parametrize("name", ASSIGNERS)
@pytest.mark.parametrize("max_gt", [0, 5])
def test_image_without_gt_is_all_background(name, max_gt):
    assign, assign_batch, config = ASSIGNERS[name]
    scene = _scene(0, 0)
    boxes = np.tile(np.float32([[10, 10, 50, 50]]), (max_gt, 1))  # masked out: ignored
    labels, mask = np.zeros(max_gt, np.int32), np.zeros(max_gt, bool)
    result = _call(assign, scene, boxes, labels, mask, config)
    assert int(result.num_fg) == 0
    assert np.all(np.asarray(result.gt_index) == -1)
    assert np.all(np.asarray(result.labels) == -1)
    assert np.all(np.asarray(result.box_targets) == 0)
    np.testing.assert_array_equal(result.dynamic_k, np.zeros(max_gt))
    batch = assign_batch(
        scene.pred_boxes[None],
        scene.cls_logits[None],
        scene.points,
        scene.strides,
        boxes[None],
        labels[None],
        mask[None],
        obj_logits=scene.obj_logits[None],
        config=config,
    )
    assert np.all(np.asarray(batch.gt_index) == -1)


@pytest.mark.parametrize("name", ASSIGNERS)
def test_same_shapes_compile_once(name):
    assign, _, config = ASSIGNERS[name]
    for seed in range(4):
        scene = _scene(100 + seed, 4)
        with COUNTER:
            _call(assign, scene, scene.gt_boxes, scene.gt_labels, np.ones(4, bool), config)
        if seed > 0:
            assert COUNTER.count == 0, f"{name} compiled anew for scene {seed}"


@pytest.mark.parametrize("name", ASSIGNERS)
def test_bfloat16_predictions_are_assigned_in_float32(name):
    """A bfloat16 model's outputs give exactly the assignment of the same values in float32."""
    import jax.numpy as jnp

    assign, _, config = ASSIGNERS[name]
    scene = _scene(5, 6)
    bf16 = {
        k: jnp.asarray(getattr(scene, k), jnp.bfloat16)
        for k in ("pred_boxes", "cls_logits", "obj_logits")
    }
    f32 = {k: np.asarray(v.astype(jnp.float32)) for k, v in bf16.items()}
    mask = np.ones(6, bool)
    args = (scene.points, scene.strides, scene.gt_boxes, scene.gt_labels, mask)
    low = assign(
        bf16["pred_boxes"], bf16["cls_logits"], *args, obj_logits=bf16["obj_logits"], config=config
    )
    high = assign(
        f32["pred_boxes"], f32["cls_logits"], *args, obj_logits=f32["obj_logits"], config=config
    )
    assert low.ious.dtype == jnp.float32 and low.box_targets.dtype == jnp.float32
    np.testing.assert_array_equal(low.gt_index, high.gt_index)
    np.testing.assert_array_equal(low.ious, high.ious)
