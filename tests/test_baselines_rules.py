"""FCOS, ATSS and Max-IoU against the float64 NumPy loops of benchmarks/reference.py.

Random scenes run as one padded batch (gts at random slots, garbage in the padding);
the assignment must match the reference exactly: gt, label, foreground, ignore and
the anchors each gt won. These rules compare geometry only (IoUs, distances, areas),
and make_scene's float boxes put no value within float32 rounding of a threshold or
of another candidate's; the hand-made scenes have exact ties on purpose (identical
boxes, anchors inside a box at equal IoU), which both sides compute exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import reference
from ota_jax.baselines.atss import ATSSConfig, atss_assign, atss_assign_batch
from ota_jax.baselines.fcos import FCOSAssignConfig, fcos_assign, fcos_assign_batch
from ota_jax.baselines.levels import level_index, rank_within_level, smallest_per_level
from ota_jax.baselines.max_iou import MaxIoUConfig, max_iou_assign, max_iou_assign_batch
from tests.scenes import make_scene, padded

pytestmark = pytest.mark.core  # Runs at the dependency floors too (.ci/run).

MAX_GT = 40
COUNTS = [1, 2, 3, 5, 8, 13, 21, 34, 4, 7, 30, 11]

FCOS = (fcos_assign, fcos_assign_batch, reference.fcos_reference)
ATSS = (atss_assign, atss_assign_batch, reference.atss_reference)
MAX_IOU = (max_iou_assign, max_iou_assign_batch, reference.max_iou_reference)
ASSIGNERS = {
    "fcos": (*FCOS, FCOSAssignConfig()),
    "atss": (*ATSS, ATSSConfig()),
    "max_iou": (*MAX_IOU, MaxIoUConfig()),
}


# Config fields that choose how, not what (the references have no such knob).
SPEED_ONLY = {"max_levels", "sizes"}


def _reference_kwargs(config) -> dict:
    return {f: getattr(config, f) for f in config.__dataclass_fields__ if f not in SPEED_ONLY}


def _scenes(seed):
    rng = np.random.default_rng(seed)
    scenes = [make_scene(rng, num_gt=n, image_size=(160, 160)) for n in COUNTS]
    hand_made = [
        # Tiny gts between anchor centres, a thin one across the image, and one that
        # overlaps no anchor box (Max-IoU gives it no low-quality match).
        [[1, 1, 3, 3], [9, 9, 11.5, 11], [0, 60, 160, 70], [300, 300, 330, 330]],
        # Overlapping gts: the area, IoU and gt-order tie-breaks decide.
        [[20, 20, 80, 80], [30, 25, 85, 90], [22, 18, 70, 75], [50, 50, 60, 60], [0, 0, 160, 160]],
        # Identical boxes (exact ties everywhere: the first gt wins, or the last for
        # Max-IoU's low-quality matches), at the image border.
        [[30, 30, 60, 60], [30, 30, 60, 60], [0, 0, 30, 20], [100, 90, 160, 160]],
    ]
    for boxes in hand_made:
        scenes.append(make_scene(rng, num_gt=0, image_size=(160, 160), gt_boxes=np.float32(boxes)))
    return scenes, rng


def _run_batch(assign_batch, config, scenes, rng, max_gt=MAX_GT):
    boxes, labels, masks, slots = zip(*(padded(s, max_gt, rng) for s in scenes), strict=True)
    stack = lambda name: np.stack([getattr(s, name) for s in scenes])
    result = assign_batch(
        stack("pred_boxes"),
        stack("cls_logits"),
        scenes[0].points,
        scenes[0].strides,
        np.stack(boxes),
        np.stack(labels),
        np.stack(masks),
        config=config,
    )
    return result, slots


CASES = [
    pytest.param(*FCOS, FCOSAssignConfig(), id="fcos"),
    pytest.param(*FCOS, FCOSAssignConfig(center_sampling=False), id="fcos-no-centre-sampling"),
    # Narrow ranges put gts on every level; two ranges for three levels: the
    # coarsest level is never positive.
    pytest.param(
        *FCOS, FCOSAssignConfig(regress_ranges=((-1, 24), (24, 48), (48, 1e8))), id="fcos-ranges"
    ),
    pytest.param(*FCOS, FCOSAssignConfig(regress_ranges=((-1, 20), (20, 40))), id="fcos-2-ranges"),
    pytest.param(*ATSS, ATSSConfig(), id="atss"),
    # More candidates than the coarsest level has anchors (25): all of them.
    pytest.param(*ATSS, ATSSConfig(topk=30, anchor_scale=5.0), id="atss-topk30"),
    # More levels than max_levels: the sort fallback of the per-level top_k.
    pytest.param(*ATSS, ATSSConfig(max_levels=2), id="atss-sort-fallback"),
    pytest.param(*MAX_IOU, MaxIoUConfig(), id="max_iou"),
    pytest.param(*MAX_IOU, MaxIoUConfig(anchor_scale=4.0, neg_iou_thr=0.3), id="max_iou-small"),
    pytest.param(*MAX_IOU, MaxIoUConfig(match_low_quality=False), id="max_iou-no-low-quality"),
]


@pytest.mark.parametrize(("assign", "assign_batch", "reference_fn", "config"), CASES)
def test_padded_batch_matches_the_reference_loop(assign, assign_batch, reference_fn, config):
    # The scenes of before configs had ``sizes`` (its repr would change the seed).
    scenes, rng = _scenes(seed=len(str(config).replace(f", sizes={config.sizes!r}", "")))
    result, slots = _run_batch(assign_batch, config, scenes, rng)
    positives = ignored = 0
    for i, (scene, image_slots) in enumerate(zip(scenes, slots, strict=True)):
        want = reference_fn(
            scene.pred_boxes,
            scene.points,
            scene.strides,
            scene.gt_boxes,
            scene.gt_labels,
            **_reference_kwargs(config),
        )
        got = jax.tree.map(lambda x, i=i: np.asarray(x[i]), result)
        # Our gt slots back to the reference's numbering of the real gts.
        slot_to_gt = np.full(MAX_GT, -1)
        slot_to_gt[image_slots] = np.arange(len(image_slots))
        gt_index = np.where(got.gt_index >= 0, slot_to_gt[got.gt_index], -1)
        assert np.all(gt_index[got.gt_index >= 0] >= 0), "assigned to a padded gt"
        np.testing.assert_array_equal(gt_index, want["gt_index"], err_msg=f"scene {i}")
        np.testing.assert_array_equal(got.labels, want["labels"])
        np.testing.assert_array_equal(got.fg_mask, want["fg_mask"])
        np.testing.assert_array_equal(got.ignore_mask, want["ignore_mask"])
        np.testing.assert_array_equal(got.dynamic_k[image_slots], want["dynamic_k"])
        assert got.dynamic_k.sum() == want["dynamic_k"].sum(), "padded gts won anchors"
        assert int(got.num_fg) == want["fg_mask"].sum()
        fg = want["fg_mask"]
        np.testing.assert_allclose(got.box_targets[fg], scene.gt_boxes[want["gt_index"][fg]])
        np.testing.assert_allclose(got.ious, want["ious"], atol=1e-5)
        positives += fg.sum()
        ignored += want["ignore_mask"].sum()
    assert positives > 150, "the scenes should exercise many positives"
    if isinstance(config, MaxIoUConfig):
        assert ignored > 20, "the scenes should exercise the ignore band"


@pytest.mark.parametrize("name", ASSIGNERS)
def test_one_image_padded_equals_batch_and_vmap(name):
    """The one-image function (padding at the end), jax.vmap of it and the batched API
    (padding at random slots) agree; assignment carries no gradient."""
    assign, assign_batch, _, config = ASSIGNERS[name]
    scenes, rng = _scenes(seed=5)
    scenes = scenes[2:6] + scenes[-2:]
    batch, slots = _run_batch(assign_batch, config, scenes, rng, max_gt=16)
    stacked = [padded(s, 16) for s in scenes]
    one_image = lambda pred, cls, boxes, labels, mask: assign(
        pred, cls, scenes[0].points, scenes[0].strides, boxes, labels, mask, config=config
    )
    per_image_args = [
        (s.pred_boxes, s.cls_logits, boxes, labels, mask)
        for s, (boxes, labels, mask, _) in zip(scenes, stacked, strict=True)
    ]
    vmapped = jax.vmap(one_image)(*(np.stack(a) for a in zip(*per_image_args, strict=True)))
    for i, args in enumerate(per_image_args):
        single = one_image(*args)
        # Slot s of the batch is real gt number (position of s in slots[i]).
        in_batch = np.asarray(batch.gt_index[i])
        want = np.where(in_batch >= 0, np.searchsorted(slots[i], in_batch), -1)
        np.testing.assert_array_equal(single.gt_index, want)
        np.testing.assert_array_equal(vmapped.gt_index[i], want)
        np.testing.assert_array_equal(single.ignore_mask, batch.ignore_mask[i])
        np.testing.assert_array_equal(vmapped.ignore_mask[i], batch.ignore_mask[i])
        np.testing.assert_array_equal(
            single.dynamic_k[: len(slots[i])], batch.dynamic_k[i][slots[i]]
        )

    pred, cls, boxes, labels, mask = per_image_args[0]
    grad = jax.grad(lambda p: one_image(p, cls, boxes, labels, mask).ious.sum())(pred)
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("name", ASSIGNERS)
def test_images_without_gts_are_all_background(name):
    assign, assign_batch, _, config = ASSIGNERS[name]
    if name == "max_iou":  # IoU 0 is not below a zero neg_iou_thr: background all the same
        config = MaxIoUConfig(neg_iou_thr=0.0)
    scene = make_scene(np.random.default_rng(0), num_gt=3, image_size=(64, 64))
    num_anchors = scene.points.shape[0]
    head = (scene.pred_boxes, scene.cls_logits, scene.points, scene.strides)
    no_slot = assign(
        *head, np.zeros((0, 4)), np.zeros(0, np.int32), np.zeros(0, bool), config=config
    )
    assert no_slot.dynamic_k.shape == (0,)
    # All padding, in a batch with an image that has gts.
    boxes, labels, _, _ = padded(scene, 4)
    masks = np.array([[False] * 4, [True, True, True, False]])
    batch = assign_batch(
        np.stack([scene.pred_boxes] * 2),
        np.stack([scene.cls_logits] * 2),
        scene.points,
        scene.strides,
        np.stack([boxes] * 2),
        np.stack([labels] * 2),
        masks,
        config=config,
    )
    assert batch.num_fg[1] > 0
    for result in (no_slot, jax.tree.map(lambda x: x[0], batch)):
        np.testing.assert_array_equal(result.gt_index, np.full(num_anchors, -1))
        np.testing.assert_array_equal(result.labels, np.full(num_anchors, -1))
        assert not np.any(result.fg_mask) and not np.any(result.ignore_mask)
        assert int(result.num_fg) == 0 and not np.any(result.dynamic_k)
        np.testing.assert_array_equal(result.box_targets, 0.0)


def test_atss_gt_with_a_single_candidate_has_no_positive():
    """One candidate has no unbiased std (torch: NaN), so no threshold passes."""
    scene = make_scene(np.random.default_rng(4), num_gt=3, image_size=(48, 48), strides=(8,))
    config = ATSSConfig(topk=1)
    want = reference.atss_reference(
        scene.pred_boxes, scene.points, scene.strides, scene.gt_boxes, scene.gt_labels, topk=1
    )
    got = atss_assign(
        *(scene.pred_boxes, scene.cls_logits, scene.points, scene.strides),
        *(scene.gt_boxes, scene.gt_labels, np.ones(3, bool)),
        config=config,
    )
    assert not want["fg_mask"].any()
    np.testing.assert_array_equal(got.gt_index, want["gt_index"])
    # Two candidates do have a threshold.
    two = atss_assign(
        *(scene.pred_boxes, scene.cls_logits, scene.points, scene.strides),
        *(scene.gt_boxes, scene.gt_labels, np.ones(3, bool)),
        config=ATSSConfig(topk=2),
    )
    assert two.fg_mask.any()


@pytest.mark.parametrize("name", ASSIGNERS)
def test_invalid_gts_are_ignored_and_bad_predictions_change_nothing(name):
    """Predictions play no part in these rules: NaN or inf predictions give the same
    assignment, with finite targets."""
    assign, _, _, config = ASSIGNERS[name]
    scene = make_scene(np.random.default_rng(3), num_gt=5, image_size=(96, 96))
    bad_boxes = np.float32(
        [[30, 30, 30, 60], [50, 50, 40, 60], [np.nan, 1, 5, 5], [10, 10, 40, 40], [20, 20, 60, 50]]
    )
    bad_labels = np.int32([0, 1, 2, -1, scene.cls_logits.shape[1]])
    boxes = np.concatenate([scene.gt_boxes, bad_boxes])
    labels = np.concatenate([scene.gt_labels, bad_labels])
    mask = np.ones(10, bool)
    mask[1] = False  # padding holding a real-looking box

    def run(pred, cls, boxes, labels, mask):
        return assign(pred, cls, scene.points, scene.strides, boxes, labels, mask, config=config)

    clean = run(scene.pred_boxes, scene.cls_logits, scene.gt_boxes, scene.gt_labels, mask[:5])
    assert int(clean.num_fg) > 0
    with_bad = run(scene.pred_boxes, scene.cls_logits, boxes, labels, mask)
    np.testing.assert_array_equal(with_bad.gt_index, clean.gt_index)
    np.testing.assert_array_equal(with_bad.dynamic_k[5:], 0)
    assert with_bad.dynamic_k[1] == 0

    nan_pred = scene.pred_boxes.copy()
    nan_pred[::3] = np.nan
    nan_pred[1::3, 2] = np.inf
    for cls in (np.full_like(scene.cls_logits, np.nan), scene.cls_logits):
        result = run(nan_pred, cls, boxes, labels, mask)
        np.testing.assert_array_equal(result.gt_index, clean.gt_index)
        np.testing.assert_array_equal(result.ignore_mask, clean.ignore_mask)
        for field in ("ious", "box_targets", "labels", "dynamic_k"):
            assert np.all(np.isfinite(np.asarray(getattr(result, field)))), field
        assert np.all(np.asarray(result.ious)[~np.isfinite(nan_pred).all(axis=1)] == 0)


@pytest.mark.parametrize("name", ASSIGNERS)
def test_wrong_shapes_raise_clear_errors(name):
    assign, assign_batch, _, config = ASSIGNERS[name]
    s = make_scene(np.random.default_rng(3), num_gt=2, image_size=(32, 32))
    mask = np.ones(2, bool)
    with pytest.raises(ValueError, match="pred_boxes has shape"):
        assign(s.pred_boxes[:-1], s.cls_logits, s.points, s.strides, s.gt_boxes, s.gt_labels, mask)
    with pytest.raises(ValueError, match="strides has shape"):
        assign(s.pred_boxes, s.cls_logits, s.points, s.strides[1:], s.gt_boxes, s.gt_labels, mask)
    with pytest.raises(ValueError, match="use the \\*_batch function"):
        assign(s.pred_boxes[None], s.cls_logits, s.points, s.strides, s.gt_boxes, s.gt_labels, mask)
    with pytest.raises(TypeError, match="gt_mask must be bool"):
        assign(s.pred_boxes, s.cls_logits, s.points, s.strides, s.gt_boxes, s.gt_labels, mask * 1)
    with pytest.raises(ValueError, match="common leading batch axis"):
        assign_batch(
            s.pred_boxes[None],
            s.cls_logits[None],
            s.points,
            s.strides,
            np.stack([s.gt_boxes] * 2),
            np.stack([s.gt_labels] * 2),
            np.stack([mask] * 2),
            config=config,
        )


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: FCOSAssignConfig(center_radius=0.0), "center_radius"),
        (lambda: FCOSAssignConfig(regress_ranges=((64, 0),)), "lo <= hi"),
        (lambda: FCOSAssignConfig(regress_ranges=((0, 1, 2),)), "pairs"),
        (lambda: ATSSConfig(topk=0), "topk"),
        (lambda: ATSSConfig(anchor_scale=-1.0), "anchor_scale"),
        (lambda: ATSSConfig(max_levels=0), "max_levels"),
        (lambda: MaxIoUConfig(neg_iou_thr=0.6), "neg_iou_thr <= pos_iou_thr"),
        (lambda: MaxIoUConfig(pos_iou_thr=0.0, neg_iou_thr=0.0), "pos_iou_thr"),
    ],
)
def test_bad_configs_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_fcos_derived_ranges_are_mmdets_and_contiguous_for_other_strides():
    """Strides 8 to 128 give mmdet's ``regress_ranges``; strides that skip a level (8, 32)
    leave no gap: the coarse level starts where the fine one ends (64, not 4 * 32)."""
    strides = np.float64([8, 16, 32, 64, 128])
    assert reference.fcos_regress_ranges(strides) == [
        (-1, 64), (64, 128), (128, 256), (256, 512), (512, float("inf"))
    ]  # fmt: skip
    scene = make_scene(
        np.random.default_rng(6), num_gt=0, image_size=(256, 256), strides=(8, 32),
        gt_boxes=np.float32([[10, 10, 200, 190], [100, 40, 180, 130], [5, 150, 40, 250]]),
    )  # fmt: skip
    want = reference.fcos_reference(
        scene.pred_boxes, scene.points, scene.strides, scene.gt_boxes, scene.gt_labels
    )
    got = fcos_assign(*scene.args, np.ones(3, bool))
    np.testing.assert_array_equal(got.gt_index, want["gt_index"])
    np.testing.assert_array_equal(got.dynamic_k, want["dynamic_k"])
    # The large gt's points on stride 32 regress 64 to 128 px: positive only without a gap.
    coarse = scene.strides == 32
    assert np.any(want["gt_index"][coarse] == 0)


def test_regress_ranges_are_stored_hashable():
    config = FCOSAssignConfig(regress_ranges=[[-1, 64], [64, float("inf")]])
    assert config.regress_ranges == ((-1.0, 64.0), (64.0, float("inf")))
    hash(config)


def test_levels_are_distinct_strides_wherever_their_anchors_sit():
    strides = jnp.float32([32, 8, 8, 16, 32, 8, 16, 8])
    np.testing.assert_array_equal(level_index(strides), [2, 0, 0, 1, 2, 0, 1, 0])
    scores = jnp.float32([[5, 3, 1, 2, 4, 1, 0, 9], [0, 0, 0, 0, 0, 0, 0, 0]])
    # Level 8 (anchors 1, 2, 5, 7): scores 3, 1, 1, 9 -> ranks 2, 0, 1, 3 (ties by index).
    np.testing.assert_array_equal(
        rank_within_level(scores, strides), [[1, 2, 0, 1, 0, 1, 0, 3], [0, 0, 1, 0, 1, 2, 1, 3]]
    )


@pytest.mark.parametrize("max_levels", [1, 2, 3, 8])
@pytest.mark.parametrize("k", [1, 3, 40])
def test_smallest_per_level_is_rank_below_k_on_both_paths(max_levels, k):
    rng = np.random.default_rng(k + max_levels)
    strides = jnp.asarray(rng.choice([8.0, 16.0, 32.0], size=64))
    # Few distinct values, so that ties (broken by anchor index) are common.
    scores = jnp.asarray(rng.integers(0, 6, size=(5, 64)).astype(np.float32))
    want = np.asarray(rank_within_level(scores, strides)) < k
    got = jax.jit(smallest_per_level, static_argnums=2, static_argnames="max_levels")(
        scores, strides, k, max_levels=max_levels
    )
    np.testing.assert_array_equal(got, want)
