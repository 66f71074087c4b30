"""The JAX assigners against the NumPy per-image loops written from ASSIGNERS.md.

Agreement is measured as in BENCHMARKS.md: the share of the reference's positive
anchors that get the same gt. Random scenes run as one padded batch (one compile);
hand-made scenes cover the corner cases by name.
"""

import dataclasses
from functools import partial

import jax
import numpy as np
import pytest

import ota_jax
from benchmarks import reference
from ota_jax._src import buckets
from ota_jax._src.matching import dynamic_k_matching, matching_votes, merge_votes, resolve_votes
from ota_jax.simota import _prefilter_batch
from tests.scenes import make_scene, padded, run_reference

pytestmark = pytest.mark.core  # Runs at the dependency floors too (.ci/run).

MAX_GT = 40
NUM_RANDOM = 16


def _random_scenes(seed):
    rng = np.random.default_rng(seed)
    counts = [1, 2, 3, 5, 8, 13, 21, 34, 4, 7, 1, 30, 6, 9, 2, 11]
    return [make_scene(rng, num_gt=n) for n in counts[:NUM_RANDOM]], rng


def _hand_made_scenes():
    rng = np.random.default_rng(7)
    cases = {
        # Smaller than the stride and between anchor centres: no candidate anchor.
        "tiny_between_centres": np.array(
            [[1.0, 1.0, 3.0, 3.0], [9.0, 9.0, 11.5, 11.0], [40.0, 40.0, 90.0, 100.0]]
        ),
        "overlapping": np.array(
            [
                [20.0, 20.0, 80.0, 80.0],
                [30.0, 25.0, 85.0, 90.0],
                [22.0, 18.0, 70.0, 75.0],
                [50.0, 50.0, 60.0, 60.0],
            ]
        ),
        "at_the_border": np.array(
            [[0.0, 0.0, 30.0, 20.0], [100.0, 90.0, 128.0, 128.0], [0.0, 60.0, 128.0, 70.0]]
        ),
        "one_gt": np.array([[33.0, 41.0, 77.0, 99.0]]),
        "identical_boxes": np.array([[30.0, 30.0, 60.0, 60.0], [30.0, 30.0, 60.0, 60.0]]),
    }
    scenes = {
        name: make_scene(rng, num_gt=0, gt_boxes=boxes.astype(np.float32))
        for name, boxes in cases.items()
    }
    # Duplicate boxes with one label would tie exactly; the tie-break then depends on
    # the gt order, which padding shuffles. Different labels keep the case decidable.
    scenes["identical_boxes"] = scenes["identical_boxes"]._replace(
        gt_labels=np.array([1, 4], np.int32)
    )
    return scenes


def _run_batch(assign_batch, config, scenes, use_obj, rng):
    boxes, labels, masks, slots = zip(*(padded(s, MAX_GT, rng) for s in scenes), strict=True)
    stack = lambda name: np.stack([getattr(s, name) for s in scenes])
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
    return result, slots


def _agreement(ours_gt_index, slots, want_gt_index):
    """Share of the reference's positives that we assign to the same gt."""
    slot_to_gt = {int(s): g for g, s in enumerate(slots)}
    mapped = np.array([slot_to_gt.get(int(i), -1) for i in ours_gt_index])
    positives = want_gt_index >= 0
    return (mapped[positives] == want_gt_index[positives]).sum(), positives.sum(), mapped


OTA_CASES = [
    ("no_obj", False, ota_jax.OTAConfig()),
    ("obj", True, ota_jax.OTAConfig()),
    ("center_prior", True, ota_jax.OTAConfig(prior="center")),  # The opt-in small-object rule.
]
SIMOTA_CASES = [
    ("center", True, ota_jax.SimOTAConfig()),
    ("center_no_obj", False, ota_jax.SimOTAConfig()),
    (
        "box_and_center",
        True,
        ota_jax.SimOTAConfig(prior="box_and_center", center_radius=2.5, penalty=1e5),
    ),
]


@pytest.mark.parametrize(
    ("assign_batch", "reference_fn", "use_obj", "config"),
    [
        pytest.param(ota_jax.ota_assign_batch, reference.ota_reference, o, c, id=f"ota-{n}")
        for n, o, c in OTA_CASES
    ]
    + [
        pytest.param(
            ota_jax.simota_assign_batch, reference.simota_reference, o, c, id=f"simota-{n}"
        )
        for n, o, c in SIMOTA_CASES
    ],
)
def test_matches_reference_loop(assign_batch, reference_fn, use_obj, config):
    # The scenes of before configs had ``sizes`` (its repr would change the seed).
    seed = len(str(config).replace(f", sizes={config.sizes!r}", "")) + use_obj
    scenes, rng = _random_scenes(seed=seed)
    hand_made = _hand_made_scenes()
    scenes = scenes + list(hand_made.values())
    result, slots = _run_batch(assign_batch, config, scenes, use_obj, rng)

    agreed = total = 0
    for i, scene in enumerate(scenes):
        want = run_reference(reference_fn, scene, config, use_obj)
        same, count, mapped = _agreement(np.asarray(result.gt_index[i]), slots[i], want["gt_index"])
        agreed, total = agreed + same, total + count
        # dynamic k per real gt, in the reference's gt order.
        np.testing.assert_array_equal(
            np.asarray(result.dynamic_k[i])[list(slots[i])], want["dynamic_k"]
        )
        # Targets follow from the assignment.
        fg = mapped >= 0
        np.testing.assert_array_equal(np.asarray(result.fg_mask[i]), fg)
        np.testing.assert_array_equal(np.asarray(result.labels[i])[fg], scene.gt_labels[mapped[fg]])
        np.testing.assert_allclose(
            np.asarray(result.box_targets[i])[fg], scene.gt_boxes[mapped[fg]]
        )
        both = fg & (want["gt_index"] == mapped)
        np.testing.assert_allclose(np.asarray(result.ious[i])[both], want["ious"][both], atol=1e-5)
        assert int(result.num_fg[i]) == fg.sum()
    assert total > 500, "the cases should exercise many positives"
    assert agreed / total >= 0.999, f"{agreed}/{total} positives agree"


def test_gts_without_candidates_still_ship_their_labels():
    """A gt between anchor centres has no candidate; OTA still gives it k anchors,
    its cheapest relative to the background, as the float64 official loop does."""
    scene = _hand_made_scenes()["tiny_between_centres"]
    boxes, labels, mask, _ = padded(scene, 4)
    result = ota_jax.ota_assign(
        scene.pred_boxes,
        scene.cls_logits,
        scene.points,
        scene.strides,
        boxes,
        labels,
        mask,
        config=ota_jax.OTAConfig(return_transport=True),
    )
    want = run_reference(reference.ota_reference, scene, ota_jax.OTAConfig(), use_obj=False)
    assert not want["candidate_mask"][:2].any()
    plan = np.asarray(result.transport.plan)
    # Each candidate-less gt's row ships its whole supply, like every other row.
    np.testing.assert_allclose(plan[:2].sum(axis=1), want["mu"][:2], rtol=1e-3)
    np.testing.assert_allclose(plan[[0, 1, 2, 4]], want["plan"], atol=1e-3)
    np.testing.assert_array_equal(np.asarray(result.gt_index), want["gt_index"])


@pytest.mark.parametrize(
    ("assign", "reference_fn", "config"),
    [
        pytest.param(
            ota_jax.ota_assign,
            reference.ota_reference,
            ota_jax.OTAConfig(),
            id="ota",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            ota_jax.simota_assign, reference.simota_reference, ota_jax.SimOTAConfig(), id="simota"
        ),
    ],
)
def test_matches_reference_on_a_crowded_image_with_100_gts(assign, reference_fn, config):
    scene = make_scene(np.random.default_rng(100), num_gt=100, image_size=(192, 192))
    head = (scene.pred_boxes, scene.cls_logits, scene.points, scene.strides)
    result = assign(
        *head,
        scene.gt_boxes,
        scene.gt_labels,
        np.ones(100, bool),
        obj_logits=scene.obj_logits,
        config=config,
    )
    want = run_reference(reference_fn, scene, config)
    positives = want["gt_index"] >= 0
    agreed = (np.asarray(result.gt_index)[positives] == want["gt_index"][positives]).mean()
    assert positives.sum() > 200
    assert agreed >= 0.999
    np.testing.assert_array_equal(result.dynamic_k, want["dynamic_k"])


def test_simota_assigns_a_crowded_batch_a_few_images_at_a_time_as_the_reference():
    """On a CPU the large size buckets run a few images at a time
    (`buckets.images_at_once`); four 192 x 192 images of 100 gts take that path,
    two images a step."""
    rng = np.random.default_rng(101)
    scenes = [make_scene(rng, num_gt=100, image_size=(192, 192)) for _ in range(4)]
    num_anchors = scenes[0].points.shape[0]
    stack = lambda name: np.stack([getattr(s, name) for s in scenes])
    config = ota_jax.SimOTAConfig(sizes=buckets.CPU_SIZES)
    # Every image has more prefiltered anchors than the smallest column bucket
    # holds, so the dense bucket (all 756 anchors) runs, two images a step.
    prefilter = _prefilter_batch(
        scenes[0].points, scenes[0].strides, stack("gt_boxes"), np.ones((4, 100), bool), config
    )
    cpu = buckets.CPU_SIZES
    assert int(prefilter.sum(axis=1).min()) > min(c for _, c in cpu.pairs)
    assert buckets.images_at_once(4, 100 * num_anchors, cpu) == 2
    result = ota_jax.simota_assign_batch(
        stack("pred_boxes"),
        stack("cls_logits"),
        scenes[0].points,
        scenes[0].strides,
        stack("gt_boxes"),
        stack("gt_labels"),
        np.ones((4, 100), bool),
        obj_logits=stack("obj_logits"),
        config=config,
    )
    for image, scene in enumerate(scenes):
        want = run_reference(reference.simota_reference, scene, config)
        positives = want["gt_index"] >= 0
        got = np.asarray(result.gt_index[image])
        assert positives.sum() > 200
        assert (got[positives] == want["gt_index"][positives]).mean() >= 0.999
        np.testing.assert_array_equal(result.dynamic_k[image], want["dynamic_k"])


def test_simota_takes_a_large_image_in_gt_slices_as_the_reference():
    """An image whose gt-anchor pairs exceed its sizes' ``pairs_at_once`` (set on a
    CPU) takes its gts in slices (`buckets.gt_slices`). With the limit lowered, this
    30-gt image takes 8 of them, and still matches the reference loop."""
    sizes = dataclasses.replace(buckets.CPU_SIZES, pairs_at_once=2048)
    rng = np.random.default_rng(7)
    scene = make_scene(rng, num_gt=30, image_size=(160, 160))
    assert buckets.gt_slices(32, 512, sizes) == 8
    config = ota_jax.SimOTAConfig(sizes=sizes)
    result = ota_jax.simota_assign(
        *scene.args,
        np.ones(30, bool),
        obj_logits=scene.obj_logits,
        config=config,
    )
    want = run_reference(reference.simota_reference, scene, config)
    positives = want["gt_index"] >= 0
    assert positives.sum() > 50
    np.testing.assert_array_equal(result.gt_index, want["gt_index"])
    np.testing.assert_array_equal(result.dynamic_k, want["dynamic_k"])
    np.testing.assert_allclose(result.ious, want["ious"], atol=1e-5)


@pytest.mark.parametrize("slices", [1, 3, 5])
@pytest.mark.parametrize("seed", range(3))
def test_dynamic_k_matching_against_yolox_matching(seed, slices):
    """The matching step alone, on costs built to collide: few distinct values (ties
    everywhere), more labels wanted than columns hold (conflicts), masked columns and
    padded gts, against the loop of YOLOX's ``simota_matching``. In ``slices`` slices
    of gts whose votes merge (as SimOTA takes a large image; the last of 5 holds only
    padded gts), the result must be the same."""
    rng = np.random.default_rng(seed)
    num_gt, num_anchors, topk = 12, 40, 10
    cost = rng.integers(0, 6, size=(num_gt, num_anchors)).astype(np.float32)
    anchor_mask = rng.random(num_anchors) < 0.6
    gt_mask = np.arange(num_gt) < 9
    k = np.where(gt_mask, rng.integers(1, topk + 1, size=num_gt), 0)

    def sliced(cost, k, anchor_mask, gt_mask):
        votes = None
        for rows in np.array_split(np.arange(num_gt), slices):
            part = matching_votes(
                cost[rows], k[rows], anchor_mask, gt_mask[rows], topk=topk, first_gt=int(rows[0])
            )
            votes = part if votes is None else merge_votes(votes, part)
        return resolve_votes(votes)

    if slices == 1:
        match = partial(dynamic_k_matching, topk=topk)
    else:
        match = sliced
    got = np.asarray(jax.jit(match)(cost, k, anchor_mask, gt_mask))

    columns = np.flatnonzero(anchor_mask)
    matching, selected = reference.simota_matching(cost[gt_mask][:, columns], k[gt_mask])
    want = np.full(num_anchors, -1)
    gts, cols = np.nonzero(matching)
    want[columns[cols]] = gts  # the real gts are the first rows
    assert (selected.sum(axis=0) > 1).sum() >= 5, "the costs should make conflicts"
    np.testing.assert_array_equal(got, want)


def test_the_centre_prior_gives_a_gt_of_one_stride_more_than_one_positive():
    points, strides = ota_jax.anchor_points((64, 64), strides=(8,))
    gt = np.array([[25.0, 25.0, 31.0, 31.0]], np.float32)  # 6 px: one anchor centre, (28, 28).
    # Every prediction is the gt's box: a candidate's IoU is 1, so dynamic k counts them.
    pred_boxes = np.broadcast_to(gt, (points.shape[0], 4))
    args = (pred_boxes, np.zeros((points.shape[0], 2)), points, strides, gt, np.array([0]))
    official = ota_jax.ota_assign(*args, np.array([True]), config=ota_jax.OTAConfig())
    centre = ota_jax.ota_assign(*args, np.array([True]), config=ota_jax.OTAConfig(prior="center"))
    assert int(official.dynamic_k[0]) == int(official.num_fg) == 1
    assert int(centre.dynamic_k[0]) > 1 and int(centre.num_fg) > 1
