"""Bad input gets a defined result without NaN, or a clear error before tracing."""

import numpy as np
import pytest

import ota_jax
from tests.scenes import make_scene

# Every registered assigner: (one-image function, default config).
ASSIGNERS = {
    name: (getattr(ota_jax, f"{name}_assign"), spec.config_class())
    for name, spec in ota_jax.assigners.ASSIGNERS.items()
}


@pytest.fixture
def scene():
    return make_scene(np.random.default_rng(3), num_gt=5, image_size=(96, 96))


def _call(name, scene, boxes=None, labels=None, mask=None, **overrides):
    assign, config = ASSIGNERS[name]
    boxes = scene.gt_boxes if boxes is None else boxes
    labels = scene.gt_labels if labels is None else labels
    mask = np.ones(len(boxes), bool) if mask is None else mask
    args = dict(
        pred_boxes=scene.pred_boxes, cls_logits=scene.cls_logits, obj_logits=scene.obj_logits
    )
    args.update(overrides)
    return assign(
        args["pred_boxes"],
        args["cls_logits"],
        scene.points,
        scene.strides,
        boxes,
        labels,
        mask,
        obj_logits=args["obj_logits"],
        config=config,
    )


def _assert_well_formed(result, num_gt):
    for field in ("box_targets", "ious", "gt_index", "labels", "dynamic_k"):
        assert np.all(np.isfinite(np.asarray(getattr(result, field)))), field
    gt_index = np.asarray(result.gt_index)
    assert np.all((gt_index >= -1) & (gt_index < num_gt))
    assert np.all((np.asarray(result.ious) >= 0) & (np.asarray(result.ious) <= 1))


@pytest.mark.parametrize("name", ASSIGNERS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_predictions_give_no_nan(name, scene, bad):
    rng = np.random.default_rng(0)
    pred, cls, obj = scene.pred_boxes.copy(), scene.cls_logits.copy(), scene.obj_logits.copy()
    for array in (pred, cls, obj):
        flat = array.reshape(-1)
        flat[rng.choice(flat.size, flat.size // 5, replace=False)] = bad
    result = _call(name, scene, pred_boxes=pred, cls_logits=cls, obj_logits=obj)
    _assert_well_formed(result, 5)
    everything_bad = _call(
        name,
        scene,
        pred_boxes=np.full_like(pred, bad),
        cls_logits=np.full_like(cls, bad),
        obj_logits=np.full_like(obj, bad),
    )
    _assert_well_formed(everything_bad, 5)


@pytest.mark.parametrize("name", ASSIGNERS)
def test_invalid_gts_are_ignored_like_padding(name, scene):
    bad_boxes = np.float32(
        [
            [30, 30, 30, 60],  # zero width
            [50, 50, 40, 60],  # inverted
            [np.nan, 1, 5, 5],  # not finite
            [10, 10, 40, 40],  # label out of range (below)
            [20, 20, 60, 50],
        ]
    )  # label out of range (above)
    bad_labels = np.int32([0, 1, 2, -1, scene.cls_logits.shape[1]])
    boxes = np.concatenate([scene.gt_boxes, bad_boxes])
    labels = np.concatenate([scene.gt_labels, bad_labels])
    with_bad = _call(name, scene, boxes, labels)
    clean = _call(name, scene)
    _assert_well_formed(with_bad, len(boxes))
    np.testing.assert_array_equal(with_bad.gt_index, clean.gt_index)
    np.testing.assert_array_equal(np.asarray(with_bad.dynamic_k)[5:], 0)


@pytest.mark.parametrize("name", ASSIGNERS)
def test_gts_outside_the_image_and_crowds_stay_defined(name, scene):
    outside = np.float32([[200, 200, 260, 240], [-50, -50, -10, -20]])
    result = _call(name, scene, outside, np.int32([0, 1]))
    _assert_well_formed(result, 2)
    # More gts than anchor points can serve: supplies exceed demand.
    tiny = make_scene(np.random.default_rng(1), num_gt=24, image_size=(16, 16), strides=(8,))
    crowd = _call(name, tiny, tiny.gt_boxes, tiny.gt_labels)
    _assert_well_formed(crowd, 24)


@pytest.mark.parametrize("name", ASSIGNERS)
def test_wrong_shapes_and_dtypes_raise_clear_errors(name, scene):
    with pytest.raises(ValueError, match="pred_boxes has shape"):
        _call(name, scene, pred_boxes=scene.pred_boxes[:-1])
    with pytest.raises(ValueError, match="gt_labels has shape"):
        _call(name, scene, labels=scene.gt_labels[:-1])
    with pytest.raises(ValueError, match="use the \\*_batch function"):
        _call(name, scene, cls_logits=scene.cls_logits[None])
    with pytest.raises(TypeError, match="gt_labels must be integers"):
        _call(name, scene, labels=scene.gt_labels.astype(np.float32))
    with pytest.raises(TypeError, match="gt_mask must be bool"):
        _call(name, scene, mask=np.ones(5, np.int32))


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="prior"):
        ota_jax.SimOTAConfig(prior="box")
    with pytest.raises(ValueError):
        ota_jax.OTAConfig(epsilon=0.0)


@pytest.mark.parametrize("name", ASSIGNERS)
def test_a_batch_of_no_images_gets_an_empty_assignment(name, scene):
    _, config = ASSIGNERS[name]
    assign_batch = ota_jax.assigners.ASSIGNERS[name].assign_batch
    none = lambda x: np.zeros((0, *np.shape(x)), np.asarray(x).dtype)
    result = assign_batch(
        none(scene.pred_boxes),
        none(scene.cls_logits),
        scene.points,
        scene.strides,
        none(scene.gt_boxes),
        none(scene.gt_labels),
        np.zeros((0, len(scene.gt_boxes)), bool),
        obj_logits=none(scene.obj_logits),
        config=config,
    )
    num_anchors = scene.points.shape[0]
    assert result.gt_index.shape == (0, num_anchors)
    assert result.box_targets.shape == (0, num_anchors, 4)
    assert result.num_fg.shape == (0,)
