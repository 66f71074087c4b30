"""Task-aligned (TAL) and dynamic soft label (DSL) assigners against the float64
NumPy loops of ``benchmarks/reference.py``, plus padding, empty images and bad input.

Agreement is exact (every anchor's gt, label and every gt's k). That is sound
because the scenes of ``tests/scenes.py`` draw boxes and logits from continuous
distributions: no two metrics or costs a ranking compares lie within float32
rounding of each other, so float32 (JAX) and float64 (reference) rank alike.
Exact ties are built on purpose (identical anchors, identical gt boxes) and must
break the same way: lower anchor index first, first gt on conflicts.
"""

import functools

import numpy as np
import optax
import pytest
from scipy.special import expit

from benchmarks import reference
from ota_jax.baselines.dsl import DSLConfig, dsl_assign, dsl_assign_batch, soft_label_class_cost
from ota_jax.baselines.tal import TALConfig, tal_assign, tal_assign_batch
from tests.scenes import make_scene, padded

pytestmark = pytest.mark.core  # Needs only the core dependencies.

MAX_GT = 24
IMAGE = (96, 96)

CASES = {
    "tal": (tal_assign, tal_assign_batch, reference.tal_reference, TALConfig(), False),
    "tal_yolov8_obj": (
        tal_assign,
        tal_assign_batch,
        reference.tal_reference,
        TALConfig.yolov8(),
        True,
    ),
    # Ultralytics 8.4: short gt sides grown to the second stride for the inside test.
    "tal_yolov8_grown": (
        tal_assign,
        tal_assign_batch,
        reference.tal_reference,
        TALConfig.yolov8(grow_small_gts=True),
        False,
    ),
    # Mmdet's order with the YOLOv8 metric, an objectness logit and a zero eps.
    "tal_topk_then_inside_obj": (
        tal_assign,
        tal_assign_batch,
        reference.tal_reference,
        TALConfig(alpha=0.5, topk=10, inside_eps=1e-9, soft_target_eps=0.0),
        True,
    ),
    "dsl": (dsl_assign, dsl_assign_batch, reference.dsl_reference, DSLConfig(), False),
    "dsl_obj": (dsl_assign, dsl_assign_batch, reference.dsl_reference, DSLConfig(), True),
}
ASSIGNERS = {"tal": CASES["tal"], "dsl": CASES["dsl"]}


def _reference_kwargs(config):
    if isinstance(config, TALConfig):
        # Every field but the sizes it runs at, which change no result.
        fields = set(TALConfig.__dataclass_fields__) - {"sizes"}
        return {field: getattr(config, field) for field in fields}
    return dict(
        topk=config.topk,
        iou_weight=config.iou_weight,
        soft_center_radius=config.soft_center_radius,
        iou_eps=config.iou_eps,
    )


def _hand_made_scenes():
    rng = np.random.default_rng(11)
    cases = {
        # Smaller than the stride, between anchor centres: no anchor inside.
        "tiny_between_centres": [[1.0, 1.0, 3.0, 3.0], [9.0, 9.0, 11.5, 11.0]],
        "overlapping": [
            [20.0, 20.0, 80.0, 80.0],
            [30.0, 25.0, 85.0, 90.0],
            [22.0, 18.0, 70.0, 75.0],
            [50.0, 50.0, 60.0, 60.0],
        ],
        "at_the_border": [[0.0, 0.0, 30.0, 20.0], [70.0, 60.0, 96.0, 96.0]],
        # Identical boxes tie exactly on IoU: the first gt wins (different labels,
        # else the tie-break would depend on the gt order, which padding keeps).
        "identical_boxes": [[30.0, 30.0, 60.0, 60.0], [30.0, 30.0, 60.0, 60.0]],
    }
    scenes = [
        make_scene(rng, num_gt=0, gt_boxes=np.float32(boxes), image_size=IMAGE)
        for boxes in cases.values()
    ]
    scenes[-1] = scenes[-1]._replace(gt_labels=np.int32([1, 4]))
    return scenes


def _scenes():
    rng = np.random.default_rng(2024)
    counts = [1, 2, 3, 5, 8, 13, 21, 4, 9]
    return [make_scene(rng, num_gt=n, image_size=IMAGE) for n in counts] + _hand_made_scenes()


def _head(scene, use_obj):
    return dict(
        pred_boxes=scene.pred_boxes,
        cls_logits=scene.cls_logits,
        points=scene.points,
        strides=scene.strides,
        obj_logits=scene.obj_logits if use_obj else None,
    )


def _reference(name, scene):
    _, _, reference_fn, config, use_obj = CASES[name]
    return reference_fn(
        **_head(scene, use_obj),
        gt_boxes=scene.gt_boxes,
        gt_labels=scene.gt_labels,
        **_reference_kwargs(config),
    )


@functools.cache
def _batch_run(name):
    """The case's assigner on all scenes as one padded batch, gts at random slots."""
    _, assign_batch, _, config, use_obj = CASES[name]
    scenes = _scenes()
    rng = np.random.default_rng(5)
    boxes, labels, masks, slots = zip(*(padded(s, MAX_GT, rng) for s in scenes), strict=True)
    stack = lambda key: np.stack([getattr(s, key) for s in scenes])
    result = assign_batch(
        stack("pred_boxes"),
        stack("cls_logits"),
        scenes[0].points,
        scenes[0].strides,
        np.stack(boxes),
        np.stack(labels),
        np.stack(masks),
        obj_logits=stack("obj_logits") if use_obj else None,
        config=config,
    )
    return scenes, result, slots, (boxes, labels, masks)


def _to_scene_numbering(gt_index, slots):
    lookup = np.full(MAX_GT + 1, -1)
    lookup[list(slots)] = np.arange(len(slots))
    return np.where(gt_index >= 0, lookup[gt_index], -1)


@pytest.mark.parametrize("name", CASES)
def test_matches_reference_loop_exactly(name):
    scenes, result, slots, _ = _batch_run(name)
    positives = conflicts = 0
    for i, scene in enumerate(scenes):
        want = _reference(name, scene)
        got = _to_scene_numbering(np.asarray(result.gt_index[i]), slots[i])
        np.testing.assert_array_equal(got, want["gt_index"], err_msg=f"scene {i}")
        np.testing.assert_array_equal(np.asarray(result.labels[i]), want["labels"])
        np.testing.assert_array_equal(np.asarray(result.fg_mask[i]), want["fg_mask"])
        dynamic_k = np.asarray(result.dynamic_k[i])
        np.testing.assert_array_equal(dynamic_k[list(slots[i])], want["dynamic_k"])
        assert not np.delete(dynamic_k, list(slots[i])).any(), "padded gts have k = 0"
        np.testing.assert_allclose(np.asarray(result.ious[i]), want["ious"], atol=1e-5)
        fg = want["fg_mask"]
        np.testing.assert_array_equal(
            np.asarray(result.box_targets[i])[fg], scene.gt_boxes[want["gt_index"][fg]]
        )
        assert int(result.num_fg[i]) == fg.sum()
        if name.startswith("tal"):
            np.testing.assert_allclose(
                np.asarray(result.soft_targets[i]), want["soft_targets"], rtol=2e-5, atol=1e-9
            )
        else:
            assert result.soft_targets is None
        positives += fg.sum()
        conflicts += (want["selected"].sum(axis=0) > 1).sum()
    # The comparison must exercise many positives and the conflict rule.
    assert positives > 200
    assert conflicts > 5


def test_tal_candidate_rules_differ_as_mmdet_and_ultralytics_do():
    """Mmdet's top-k over all anchors loses the top-k anchors outside the gt: fewer
    positives than ranking inside the gt first, on the same predictions. Growing short
    gt sides (ultralytics 8.4) gives small gts more candidates."""
    scenes = _scenes()
    boxes, labels, masks, _ = zip(*(padded(s, MAX_GT) for s in scenes), strict=True)
    stack = lambda key: np.stack([getattr(s, key) for s in scenes])
    head = (stack("pred_boxes"), stack("cls_logits"), scenes[0].points, scenes[0].strides)
    counts = {}
    for name, config in {
        "topk_then_inside": TALConfig.yolov8(candidates="topk_then_inside"),
        "inside_then_topk": TALConfig.yolov8(),
        "grown": TALConfig.yolov8(grow_small_gts=True),
    }.items():
        result = tal_assign_batch(
            *head, np.stack(boxes), np.stack(labels), np.stack(masks), config=config
        )
        counts[name] = int(result.num_fg.sum())
    # These scenes raise the gt's class only inside the gt, so the gap is smaller
    # than on a real detector's predictions.
    assert counts["topk_then_inside"] < counts["inside_then_topk"], counts
    assert counts["grown"] > counts["inside_then_topk"], counts
    # The default is mmdet's (TOOD), YOLOv8's preset ultralytics'.
    assert TALConfig().candidates == "topk_then_inside" and TALConfig().inside_eps == 0.01
    yolov8 = TALConfig.yolov8()
    assert (yolov8.alpha, yolov8.beta, yolov8.topk) == (0.5, 6.0, 10)
    assert yolov8.candidates == "inside_then_topk"


def test_tal_topk_over_all_anchors_can_leave_a_gt_without_positives():
    """A gt whose best-aligned anchors all sit outside it: mmdet's rule gives it none of
    them, ultralytics' takes the best anchors inside it."""
    scene = make_scene(np.random.default_rng(1), num_gt=1, image_size=(64, 64), strides=(8,))
    gt = np.float32([[20.0, 20.0, 36.0, 36.0]])  # holds the points (28, 28) and around
    points = scene.points
    inside = (points[:, 0] > 20) & (points[:, 0] < 36) & (points[:, 1] > 20) & (points[:, 1] < 36)
    pred, cls = scene.pred_boxes.copy(), scene.cls_logits.copy()
    pred[:] = [21.0, 21.0, 35.0, 35.0]  # every anchor predicts the gt well
    cls[:, scene.gt_labels[0]] = -2.0
    cls[~inside, scene.gt_labels[0]] = 3.0  # but the outside anchors score higher
    args = dict(pred_boxes=pred, cls_logits=cls, points=points, strides=scene.strides)
    gts = dict(gt_boxes=gt, gt_labels=scene.gt_labels[:1])
    for config, want_fg in (
        (TALConfig(topk=4), 0),
        (TALConfig(topk=4, candidates="inside_then_topk"), min(4, inside.sum())),
    ):
        result = tal_assign(**args, **gts, gt_mask=np.ones(1, bool), config=config)
        want = reference.tal_reference(**args, **gts, **_reference_kwargs(config))
        assert int(result.num_fg) == want["fg_mask"].sum() == want_fg
        np.testing.assert_array_equal(result.gt_index, want["gt_index"])
        np.testing.assert_allclose(result.soft_targets, want["soft_targets"], rtol=2e-5)


def test_tal_grows_gt_sides_below_the_second_stride():
    """Ultralytics 8.4: a 4 x 30 px gt between anchor columns has no point inside, but
    grown to 16 x 30 about its centre it holds the nearest column."""
    scene = make_scene(np.random.default_rng(2), num_gt=1, image_size=(64, 64))
    gt = np.float32([[29.0, 16.0, 33.0, 46.0]])  # x centre 31: columns at 28 and 36
    grown_inside = (
        (scene.points[:, 0] > 23) & (scene.points[:, 0] < 39)
        & (scene.points[:, 1] > 16) & (scene.points[:, 1] < 46)
    )  # fmt: skip
    pred = np.tile(np.float32([29.5, 16.5, 32.5, 45.0]), (len(scene.points), 1))
    for grow, want_fg in ((False, 0), (True, min(10, grown_inside.sum()))):
        config = TALConfig.yolov8(grow_small_gts=grow)
        result = tal_assign(
            pred, scene.cls_logits, scene.points, scene.strides, gt, scene.gt_labels[:1],
            np.ones(1, bool), config=config,
        )  # fmt: skip
        assert int(result.num_fg) == want_fg
        assert np.all(grown_inside[np.asarray(result.fg_mask)])
    # One level: the smallest stride is the side.
    np.testing.assert_array_equal(reference.second_smallest_stride([16.0, 16.0]), 16.0)


@pytest.mark.parametrize("name", ["tal_yolov8_obj", "dsl"])
def test_one_image_equals_its_row_of_the_padded_batch(name):
    assign, _, _, config, use_obj = CASES[name]
    scenes, result, _, (boxes, labels, masks) = _batch_run(name)
    for i in (0, 4, 6, len(scenes) - 1):
        alone = assign(
            **_head(scenes[i], use_obj),
            gt_boxes=boxes[i],
            gt_labels=labels[i],
            gt_mask=masks[i],
            config=config,
        )
        for field in ("gt_index", "labels", "dynamic_k", "fg_mask", "ious", "box_targets"):
            np.testing.assert_array_equal(getattr(alone, field), getattr(result, field)[i])


def test_tal_breaks_metric_ties_to_the_lower_anchor_and_needs_a_positive_metric():
    scene = make_scene(np.random.default_rng(1), num_gt=1, image_size=(64, 64), strides=(8,))
    gt = np.float32([[8.0, 8.0, 40.0, 40.0]])
    pred, cls = scene.pred_boxes.copy(), scene.cls_logits.copy()
    # Two anchors inside the gt with the same prediction: an exact tie.
    inside = np.nonzero(
        (scene.points[:, 0] > 8) & (scene.points[:, 0] < 40) & (scene.points[:, 1] > 8)
    )[0]
    inside = inside[scene.points[inside, 1] < 40]
    first, second = inside[3], inside[7]
    pred[[first, second]] = [10.0, 10.0, 38.0, 38.0]
    cls[[first, second], scene.gt_labels[0]] = 5.0
    # Every other inside anchor misses the gt: IoU 0, metric 0, never taken.
    pred[np.setdiff1d(inside, [first, second])] = [50.0, 50.0, 60.0, 60.0]
    args = dict(pred_boxes=pred, cls_logits=cls, points=scene.points, strides=scene.strides)
    for topk, want_k in ((1, 1), (13, 2)):
        result = tal_assign(
            **args,
            gt_boxes=gt,
            gt_labels=scene.gt_labels,
            gt_mask=np.ones(1, bool),
            config=TALConfig(topk=topk),
        )
        want = reference.tal_reference(**args, gt_boxes=gt, gt_labels=scene.gt_labels, topk=topk)
        expected = [first] if topk == 1 else [first, second]
        np.testing.assert_array_equal(np.nonzero(want["fg_mask"])[0], expected)
        np.testing.assert_array_equal(result.gt_index, want["gt_index"])
        assert int(result.dynamic_k[0]) == want_k == want["dynamic_k"][0]


def test_dsl_without_valid_anchors_is_all_background():
    scene = _hand_made_scenes()[0]  # tiny boxes between anchor centres
    result = dsl_assign(
        *scene.args,
        np.ones(2, bool),
    )
    want = _reference("dsl", scene)
    assert not want["valid"].any()
    assert not np.asarray(result.fg_mask).any()
    np.testing.assert_array_equal(result.dynamic_k, [1, 1])


def test_soft_label_class_cost_equals_the_explicit_sum():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (40, 6)).astype(np.float32)
    logits[0] = [-90, -30, -0.0, 0.0, 30, 90]  # saturated sigmoids stay finite
    labels = np.array([0, 5, 2, 2, 4])
    ious = rng.uniform(0, 1, (5, 40)).astype(np.float32)
    ious[:, 0] = [0.0, 1.0, 0.5, 0.0, 1.0]
    soft = np.eye(6, dtype=np.float32)[labels][:, None, :] * ious[..., None]  # [M, A, C]
    x = np.broadcast_to(logits, soft.shape)
    naive = optax.sigmoid_binary_cross_entropy(x, soft) * (soft - expit(x)) ** 2
    got = soft_label_class_cost(logits, labels, ious)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, naive.sum(-1), rtol=1e-4, atol=1e-4)


def _call(name, scene, boxes=None, labels=None, mask=None, **overrides):
    assign, _, _, config, _ = ASSIGNERS[name]
    head = dict(
        pred_boxes=scene.pred_boxes, cls_logits=scene.cls_logits, obj_logits=scene.obj_logits
    )
    head.update(overrides)
    boxes = scene.gt_boxes if boxes is None else boxes
    labels = scene.gt_labels if labels is None else labels
    mask = np.ones(len(boxes), bool) if mask is None else mask
    return assign(
        head["pred_boxes"],
        head["cls_logits"],
        scene.points,
        scene.strides,
        boxes,
        labels,
        mask,
        obj_logits=head["obj_logits"],
        config=config,
    )


@pytest.fixture
def small_scene():
    return make_scene(np.random.default_rng(3), num_gt=5, image_size=(64, 64))


def _assert_well_formed(result, num_gt):
    for field in ("box_targets", "ious", "gt_index", "labels", "dynamic_k"):
        assert np.all(np.isfinite(np.asarray(getattr(result, field)))), field
    gt_index = np.asarray(result.gt_index)
    assert np.all((gt_index >= -1) & (gt_index < num_gt))
    assert np.all((np.asarray(result.ious) >= 0) & (np.asarray(result.ious) <= 1))
    np.testing.assert_array_equal(result.fg_mask, gt_index >= 0)


@pytest.mark.parametrize("name", ASSIGNERS)
def test_empty_images_are_all_background(name, small_scene):
    _, assign_batch, _, config, _ = ASSIGNERS[name]
    no_slot = _call(name, small_scene, np.zeros((0, 4), np.float32), np.zeros(0, np.int32))
    all_padding = _call(name, small_scene, mask=np.zeros(5, bool))
    for result in (no_slot, all_padding):
        assert not np.asarray(result.fg_mask).any()
        assert int(result.num_fg) == 0
        assert np.all(np.asarray(result.gt_index) == -1)
        assert np.all(np.asarray(result.labels) == -1)
        assert not np.asarray(result.dynamic_k).any()
    assert all_padding.dynamic_k.shape == (5,)
    # An empty image in a batch next to a full one changes neither.
    full = _call(name, small_scene)
    assert int(full.num_fg) > 0
    stack = lambda x: np.stack([x, x])
    batch = assign_batch(
        stack(small_scene.pred_boxes),
        stack(small_scene.cls_logits),
        small_scene.points,
        small_scene.strides,
        stack(small_scene.gt_boxes),
        stack(small_scene.gt_labels),
        np.stack([np.ones(5, bool), np.zeros(5, bool)]),
        obj_logits=stack(small_scene.obj_logits),
        config=config,
    )
    np.testing.assert_array_equal(batch.gt_index[0], full.gt_index)
    assert not np.asarray(batch.fg_mask[1]).any()


@pytest.mark.parametrize("name", ASSIGNERS)
def test_invalid_gts_are_ignored_like_padding(name, small_scene):
    bad_boxes = np.float32(
        [
            [30, 30, 30, 60],  # zero width
            [50, 50, 40, 60],  # inverted
            [np.nan, 1, 5, 5],  # not finite
            [10, 10, 40, 40],  # label below range
            [20, 20, 60, 50],  # label above range
        ]
    )
    bad_labels = np.int32([0, 1, 2, -1, small_scene.cls_logits.shape[1]])
    boxes = np.concatenate([small_scene.gt_boxes, bad_boxes])
    labels = np.concatenate([small_scene.gt_labels, bad_labels])
    with_bad = _call(name, small_scene, boxes, labels)
    clean = _call(name, small_scene, boxes, labels, mask=np.arange(10) < 5)
    _assert_well_formed(with_bad, 10)
    assert int(clean.num_fg) > 0
    np.testing.assert_array_equal(with_bad.gt_index, clean.gt_index)
    np.testing.assert_array_equal(with_bad.dynamic_k, clean.dynamic_k)
    np.testing.assert_array_equal(np.asarray(with_bad.dynamic_k)[5:], 0)


@pytest.mark.parametrize("name", ASSIGNERS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_predictions_give_no_nan(name, small_scene, bad):
    rng = np.random.default_rng(0)
    pred, cls = small_scene.pred_boxes.copy(), small_scene.cls_logits.copy()
    obj = small_scene.obj_logits.copy()
    for array in (pred, cls, obj):
        flat = array.reshape(-1)
        flat[rng.choice(flat.size, flat.size // 5, replace=False)] = bad
    result = _call(name, small_scene, pred_boxes=pred, cls_logits=cls, obj_logits=obj)
    _assert_well_formed(result, 5)
    everything_bad = _call(
        name,
        small_scene,
        pred_boxes=np.full_like(pred, bad),
        cls_logits=np.full_like(cls, bad),
        obj_logits=np.full_like(obj, bad),
    )
    _assert_well_formed(everything_bad, 5)
    if name == "tal":  # every IoU is 0, so no metric is positive
        assert not np.asarray(everything_bad.fg_mask).any()


@pytest.mark.parametrize("name", ASSIGNERS)
def test_wrong_shapes_and_dtypes_raise_clear_errors(name, small_scene):
    _, assign_batch, _, _, _ = ASSIGNERS[name]
    with pytest.raises(ValueError, match="pred_boxes has shape"):
        _call(name, small_scene, pred_boxes=small_scene.pred_boxes[:-1])
    with pytest.raises(ValueError, match="gt_labels has shape"):
        _call(name, small_scene, labels=small_scene.gt_labels[:-1])
    with pytest.raises(ValueError, match="obj_logits has shape"):
        _call(name, small_scene, obj_logits=small_scene.obj_logits[:-1])
    with pytest.raises(ValueError, match="use the \\*_batch function"):
        _call(name, small_scene, cls_logits=small_scene.cls_logits[None])
    with pytest.raises(TypeError, match="gt_labels must be integers"):
        _call(name, small_scene, labels=small_scene.gt_labels.astype(np.float32))
    with pytest.raises(TypeError, match="gt_mask must be bool"):
        _call(name, small_scene, mask=np.ones(5, np.int32))
    with pytest.raises(ValueError, match="common leading batch axis"):
        s = small_scene
        assign_batch(
            s.pred_boxes[None],
            s.cls_logits[None],
            s.points,
            s.strides,
            np.stack([s.gt_boxes, s.gt_boxes]),
            np.stack([s.gt_labels, s.gt_labels]),
            np.ones((2, 5), bool),
        )


@pytest.mark.parametrize(
    ("config_class", "kwargs"),
    [
        (TALConfig, dict(alpha=-1.0)),
        (TALConfig, dict(beta=float("nan"))),
        (TALConfig, dict(topk=0)),
        (TALConfig, dict(inside_eps=-0.1)),
        (TALConfig, dict(candidates="inside")),
        (TALConfig, dict(soft_target_eps=-1e-9)),
        (DSLConfig, dict(topk=0)),
        (DSLConfig, dict(iou_weight=-3.0)),
        (DSLConfig, dict(soft_center_radius=float("inf"))),
        (DSLConfig, dict(iou_eps=0.0)),
    ],
)
def test_bad_configs_raise(config_class, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        config_class(**kwargs)
