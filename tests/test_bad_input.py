"""Bad input gets a defined result without NaN, or a clear error before tracing."""

import jax.numpy as jnp
import numpy as np
import pytest

import ota_jax
from tests.scenes import make_scene

pytestmark = pytest.mark.core  # Needs only the core dependencies.

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


@pytest.mark.parametrize("name", ASSIGNERS)
def test_no_anchors_with_gts_present_is_all_background(name, scene):
    _, config = ASSIGNERS[name]
    spec = ota_jax.assigners.ASSIGNERS[name]
    num_classes = scene.cls_logits.shape[1]
    no_anchors = dict(
        pred_boxes=np.zeros((0, 4), np.float32),
        cls_logits=np.zeros((0, num_classes), np.float32),
        points=np.zeros((0, 2), np.float32),
        strides=np.zeros((0,), np.float32),
    )
    one = ASSIGNERS[name][0](
        *no_anchors.values(), scene.gt_boxes, scene.gt_labels, np.ones(5, bool), config=config
    )
    assert one.gt_index.shape == (0,) and one.dynamic_k.shape == (5,)
    assert int(one.num_fg) == 0 and not np.asarray(one.dynamic_k).any()
    batch = spec.assign_batch(
        no_anchors["pred_boxes"][None].repeat(2, 0),
        no_anchors["cls_logits"][None].repeat(2, 0),
        no_anchors["points"],
        no_anchors["strides"],
        scene.gt_boxes[None].repeat(2, 0),
        scene.gt_labels[None].repeat(2, 0),
        np.ones((2, 5), bool),
        config=config,
    )
    assert batch.gt_index.shape == (2, 0) and batch.dynamic_k.shape == (2, 5)
    assert batch.box_targets.shape == (2, 0, 4) and not np.asarray(batch.num_fg).any()


@pytest.mark.parametrize("name", ASSIGNERS)
def test_int64_labels_past_int32_are_invalid_not_wrapped(name, scene):
    """Without x64 an int64 label of 2**32 + 1 would wrap to class 1."""
    labels = scene.gt_labels.astype(np.int64)
    labels[2] = 2**32 + 1
    wrapped = _call(name, scene, labels=labels)
    masked = _call(name, scene, mask=np.arange(5) != 2)
    np.testing.assert_array_equal(wrapped.gt_index, masked.gt_index)
    assert int(np.asarray(wrapped.dynamic_k)[2]) == 0


@pytest.mark.parametrize("name", ASSIGNERS)
def test_complex_inputs_raise(name, scene):
    for field in ("pred_boxes", "cls_logits", "obj_logits"):
        value = getattr(scene, field).astype(np.complex64)
        with pytest.raises(TypeError, match=f"{field} must be real numbers"):
            _call(name, scene, **{field: value})
    with pytest.raises(TypeError, match="gt_boxes must be real numbers"):
        _call(name, scene, boxes=scene.gt_boxes.astype(np.complex64))


@pytest.mark.parametrize("name", ASSIGNERS)
def test_a_gt_too_large_for_float32_areas_keeps_its_anchors(name, scene):
    """FCOS compared areas: a gt of sides 1e20 has an area of inf in float32, which
    tied with the inf of pairs not allowed, and gave its points to gt 0 (invalid)."""
    boxes = np.float32([[0, 0, 50, 50], [-1e20, -1e20, 1e20, 1e20]])
    result = _call(name, scene, boxes, np.int32([0, 1]), mask=np.array([False, True]))
    _assert_well_formed(result, 2)
    assert not (np.asarray(result.gt_index) == 0).any()
    if name == "fcos":  # the coarsest level regresses any size: its points are gt 1's
        assert (np.asarray(result.gt_index) == 1).any()


@pytest.mark.parametrize("name", ASSIGNERS)
@pytest.mark.parametrize("nan_field", ["cls_logits", "obj_logits"])
def test_nan_logits_give_no_anchor_to_a_gt_without_candidates(name, scene, nan_field):
    """A gt outside the image has no candidate; with NaN logits OTA's plan row of such
    a gt was flat, and it took 81 of 84 anchors (its dynamic k is 1)."""
    boxes = np.concatenate([scene.gt_boxes[:2], np.float32([[300, 300, 340, 330]])])
    nan = np.full_like(getattr(scene, nan_field), np.nan)
    result = _call(name, scene, boxes, scene.gt_labels[:3], **{nan_field: nan})
    _assert_well_formed(result, 3)
    assert not (np.asarray(result.gt_index) == 2).any()


@pytest.mark.parametrize("name", ASSIGNERS)
def test_batch_shape_errors_name_the_batch_shapes(name, scene):
    spec = ota_jax.assigners.ASSIGNERS[name]
    batch = lambda x: np.asarray(x)[None].repeat(2, 0)
    with pytest.raises(ValueError, match=r"pred_boxes: expected \[B, A, 4\].*pred_boxes \(2, "):
        spec.assign_batch(
            batch(scene.pred_boxes[:, :3]),
            batch(scene.cls_logits),
            scene.points,
            scene.strides,
            batch(scene.gt_boxes),
            batch(scene.gt_labels),
            np.ones((2, 5), bool),
        )


@pytest.mark.parametrize("name", ASSIGNERS)
def test_a_config_of_another_class_names_the_expected_one(name, scene):
    assign, config = ASSIGNERS[name]
    other = ota_jax.TALConfig() if name != "tal" else ota_jax.OTAConfig()
    with pytest.raises(TypeError, match=f"{name}_assign takes config={type(config).__name__}"):
        assign(
            scene.pred_boxes,
            scene.cls_logits,
            scene.points,
            scene.strides,
            scene.gt_boxes,
            scene.gt_labels,
            np.ones(5, bool),
            config=other,
        )


def test_simota_in_tiles_matches_the_padded_program_on_bad_input():
    """Non-finite boxes and logits, invalid gts and bfloat16 predictions: SimOTA in
    small tiles (many loop steps) gives the padded program's result, without NaN;
    a batch without any valid gt, or without any prefiltered anchor, is background."""
    from ota_jax._src.buckets import Sizes
    from tests.scenes import padded

    rng = np.random.default_rng(1)
    scenes = [make_scene(rng, num_gt=n, image_size=(128, 128)) for n in (3, 9, 1, 14)]
    stack = lambda key: np.stack([getattr(s, key) for s in scenes])
    gts = [padded(s, 16)[:3] for s in scenes]
    boxes, labels, mask = (np.stack(x) for x in zip(*gts, strict=True))
    pred, logits, obj = stack("pred_boxes"), stack("cls_logits"), stack("obj_logits")
    anchors = rng.integers(0, pred.shape[1], 30)
    pred[0, anchors[:10]] = np.nan
    pred[1, anchors[10:15]] = np.inf
    logits[2, anchors[15:20]] = np.inf
    logits[3, anchors[20:25], 3] = -np.inf
    obj[1, anchors[25:]] = np.nan
    boxes[1, 0] = [np.nan, 1, 2, 3]
    boxes[3, 1] = [10, 10, 5, 5]
    labels[0, 2] = -3
    shared = (scenes[0].points, scenes[0].strides)
    tiles = ota_jax.SimOTAConfig(sizes=Sizes(max_pairs=0, tile=(2, 16)))

    def both(*args, obj_logits=obj):
        whole = ota_jax.simota_assign_batch(
            *args, obj_logits=obj_logits, config=ota_jax.SimOTAConfig(sizes="off")
        )
        return ota_jax.simota_assign_batch(*args, obj_logits=obj_logits, config=tiles), whole

    for dtype in (jnp.float32, jnp.bfloat16):
        predictions = (jnp.asarray(pred, dtype), jnp.asarray(logits, dtype))
        tiled, whole = both(*predictions, *shared, boxes, labels, mask)
        for field in ("gt_index", "labels", "dynamic_k", "num_fg"):
            np.testing.assert_array_equal(getattr(tiled, field), getattr(whole, field))
        np.testing.assert_allclose(tiled.ious, whole.ious, atol=1e-6)
        assert np.isfinite(np.asarray(tiled.ious)).all() and int(tiled.num_fg.sum()) > 0
    nowhere = np.full_like(boxes, 1e6)
    nowhere[..., 2:] += 5.0
    for gts in ((boxes, labels, np.zeros_like(mask)), (nowhere, labels, mask)):
        tiled, _ = both(pred, logits, *shared, *gts, obj_logits=None)
        assert int(tiled.num_fg.sum()) == 0
