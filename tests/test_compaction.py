"""Compacted OTA (candidate columns + one folded background column) equals dense OTA."""

from functools import partial

import jax
import numpy as np
import pytest

import ota_jax
from ota_jax._src import buckets, compaction
from ota_jax._src.inputs import AssignArgs
from ota_jax.ota import _candidates, _needed_anchors
from tests.scenes import make_scene, padded, run_reference

pytestmark = pytest.mark.core  # Needs only the core dependencies.

IMAGE = (256, 256)  # 1344 anchor points on strides 8/16/32
MAX_GT = 24


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(11)
    scenes = [make_scene(rng, num_gt=n, image_size=IMAGE) for n in (1, 4, 9, 16, 24, 6)]
    # Gts smaller than the stride between anchor centres: no candidate anchor.
    tiny = np.float32([[1, 1, 3, 3], [9, 9, 11.5, 11], [100, 60, 102, 63]])
    scenes.append(make_scene(rng, num_gt=0, image_size=IMAGE, gt_boxes=tiny))
    return _stack(scenes, MAX_GT)


def _stack(scenes, max_gt: int) -> dict:
    """The batched assigner arguments of ``scenes``, gts padded to ``max_gt``."""
    boxes, labels, masks, _ = zip(*(padded(s, max_gt) for s in scenes), strict=True)
    stack = lambda key: np.stack([getattr(s, key) for s in scenes])
    return dict(
        pred_boxes=stack("pred_boxes"),
        cls_logits=stack("cls_logits"),
        points=scenes[0].points,
        strides=scenes[0].strides,
        gt_boxes=np.stack(boxes),
        gt_labels=np.stack(labels),
        gt_mask=np.stack(masks),
        obj_logits=stack("obj_logits"),
    )


def _assign(batch, **config):
    config = ota_jax.OTAConfig(return_transport=True, **config)
    args = {k: v for k, v in batch.items() if k != "obj_logits"}
    return ota_jax.ota_assign_batch(**args, config=config)


@pytest.mark.slow
def test_compacted_equals_dense(batch):
    dense = _assign(batch, max_columns=None)
    compact = _assign(batch, max_columns=700)
    np.testing.assert_array_equal(compact.gt_index, dense.gt_index)
    np.testing.assert_array_equal(compact.dynamic_k, dense.dynamic_k)
    np.testing.assert_allclose(compact.transport.plan, dense.transport.plan, atol=2e-5)


def test_compaction_really_ran_and_dropped_most_columns(batch):
    """Every image's kept columns fit the bound, so the compacted branch ran above."""
    names = ("pred_boxes", "cls_logits", "points", "strides", "gt_boxes", "gt_labels", "gt_mask")
    args = AssignArgs(*(jax.numpy.asarray(batch[n]) for n in names))
    config = ota_jax.OTAConfig(sizes=ota_jax.resolve_sizes())
    kept = np.asarray(_needed_anchors(args, config).sum(axis=1))
    assert np.all(kept <= 700)
    assert np.all(kept < len(batch["points"]) / 2)


@pytest.mark.slow
def test_dynamic_k_ignores_the_padding_of_the_kept_columns():
    """The kept columns are padded with anchor 0. Here anchor 0 is the one candidate
    of a corner gt whose predicted box is the gt itself (IoU 1): counted once per
    padding slot, its IoU would make k = q instead of 1."""
    rng = np.random.default_rng(5)
    scene = make_scene(rng, num_gt=0, image_size=IMAGE, gt_boxes=np.float32([[0, 0, 7, 7]]))
    pred_boxes = np.array(scene.pred_boxes)
    pred_boxes[0] = scene.gt_boxes[0]
    batch = _stack([scene._replace(pred_boxes=pred_boxes)], MAX_GT)
    dense = _assign(batch, max_columns=None)
    compact = _assign(batch, max_columns=700)
    assert int(dense.dynamic_k[0, 0]) == 1
    np.testing.assert_array_equal(compact.dynamic_k, dense.dynamic_k)
    np.testing.assert_array_equal(compact.gt_index, dense.gt_index)


def test_overflow_falls_back_to_dense(batch):
    dense = _assign(batch, max_columns=None)
    overflowing = _assign(batch, max_columns=8)
    np.testing.assert_array_equal(overflowing.gt_index, dense.gt_index)
    # The same dense problem, compiled inside a switch branch: float32-ulp differences.
    np.testing.assert_allclose(
        overflowing.transport.plan, dense.transport.plan, rtol=1e-5, atol=1e-6
    )


@pytest.mark.slow
def test_single_image_compaction_matches_batch(batch):
    config = ota_jax.OTAConfig(max_columns=700)
    batched = _assign(batch, max_columns=700)
    image = 3
    single = ota_jax.ota_assign(
        batch["pred_boxes"][image],
        batch["cls_logits"][image],
        batch["points"],
        batch["strides"],
        batch["gt_boxes"][image],
        batch["gt_labels"][image],
        batch["gt_mask"][image],
        config=config,
    )
    np.testing.assert_array_equal(single.gt_index, batched.gt_index[image])


@pytest.mark.slow
def test_folded_column_is_exact_for_a_pure_background_problem():
    """Anchors only the background reaches: folding them changes no plan entry."""
    rng = np.random.default_rng(0)
    cost = rng.uniform(0, 3, (3, 30)).astype(np.float32)
    cost[:2, 10:] = 1e7  # gts never reach anchors 10..29
    supply = np.float32([2, 3, 25])
    needed = np.arange(30) < 10
    dense = ota_jax.solve_transport(cost, supply, np.ones(30), epsilon=0.1, num_iters=50)
    index, valid = compaction.kept_columns(needed, 12)
    folded = compaction.solve_compacted(
        cost[:, index], supply, index, valid, 30, epsilon=0.1, num_iters=50
    )
    assert folded.plan.shape == (3, 13)  # 12 kept columns (2 of them padding) + 1 folded
    per_anchor = compaction.per_anchor_plan(folded.plan, valid, 30)
    np.testing.assert_allclose(per_anchor[:, :10], dense.plan[:, :10], atol=1e-5)
    np.testing.assert_allclose(per_anchor[:, -1], dense.plan[:, 29], atol=1e-5)
    expanded = compaction.expand_plan(per_anchor, index, valid, 30)
    np.testing.assert_allclose(expanded, dense.plan, atol=1e-5)


@pytest.mark.parametrize("prior", ["center", "box_and_center"])
def test_simota_in_tiles_matches_the_reference(prior):
    """SimOTA takes gts and prefiltered anchors in tiles (here 2 gts x 32 anchors, so
    several of each) and merges them exactly: the reference's assignment."""
    from benchmarks import reference
    from ota_jax.simota import _pair_geometry

    # Tiles even for this small problem (below SMALL_PAIRS).
    sizes = buckets.Sizes(max_pairs=0, tile=(2, 32))
    config = ota_jax.SimOTAConfig(prior=prior, sizes=sizes)
    rng = np.random.default_rng(5)
    scenes = [make_scene(rng, num_gt=n, image_size=IMAGE) for n in (1, 3, 5, 2)]
    boxes, labels, masks, _ = zip(*(padded(s, 12) for s in scenes), strict=True)
    stack = lambda key: np.stack([getattr(s, key) for s in scenes])
    result = ota_jax.simota_assign_batch(
        stack("pred_boxes"),
        stack("cls_logits"),
        scenes[0].points,
        scenes[0].strides,
        np.stack(boxes),
        np.stack(labels),
        np.stack(masks),
        obj_logits=stack("obj_logits"),
        config=config,
    )
    most = 0
    for i, scene in enumerate(scenes):
        in_region, _ = _pair_geometry(scene.points, scene.strides, boxes[i], masks[i], config)
        most = max(most, int(in_region.any(axis=0).sum()))
        want = run_reference(reference.simota_reference, scene, config)
        np.testing.assert_array_equal(result.gt_index[i], want["gt_index"])
        np.testing.assert_allclose(result.ious[i], want["ious"], atol=1e-5)
        np.testing.assert_array_equal(
            np.asarray(result.dynamic_k[i])[: len(scene.gt_boxes)], want["dynamic_k"]
        )
    assert most > 2 * 32  # at least three tiles of anchors


@pytest.mark.slow
def test_more_gts_without_candidates_than_searched_on_their_own_rows():
    """Seven candidate-less gts in one image (more than the 4 rows the search for
    their cheapest anchors takes on its own: it searches every row), three in
    another: compacted equals dense, and each candidate-less gt gets its k labels."""
    rng = np.random.default_rng(4)
    corners = rng.uniform(4, 240, (7, 2)).astype(np.float32)
    tiny = np.concatenate([corners, corners + rng.uniform(1.5, 3, (7, 2))], axis=1)
    big = np.float32([[20, 30, 120, 110], [140, 60, 230, 200]])
    scenes = [
        make_scene(rng, num_gt=0, image_size=IMAGE, gt_boxes=np.concatenate([tiny, big])),
        make_scene(rng, num_gt=0, image_size=IMAGE, gt_boxes=np.concatenate([big, tiny[:3]])),
    ]
    batch = _stack(scenes, 12)
    candidates = jax.vmap(
        partial(_candidates, batch["points"], batch["strides"], config=ota_jax.OTAConfig())
    )(batch["gt_boxes"], batch["gt_mask"])
    candidate_less = ~np.asarray(candidates).any(axis=2) & batch["gt_mask"]
    np.testing.assert_array_equal(candidate_less.sum(axis=1), [7, 3])
    dense = _assign(batch, max_columns=None)
    compact = _assign(batch, max_columns=700)
    np.testing.assert_array_equal(compact.gt_index, dense.gt_index)
    for image in range(2):
        gt_index = np.asarray(compact.gt_index[image])
        won = np.bincount(gt_index[gt_index >= 0], minlength=12)
        less = candidate_less[image]
        np.testing.assert_array_equal(won[less], np.asarray(compact.dynamic_k)[image][less])


@pytest.mark.parametrize("num", [1, 31, 32, 33, 1344])
@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.5, 1.0])
def test_true_indices_are_the_first_true_positions(num, fraction):
    rng = np.random.default_rng(num)
    mask = rng.uniform(size=num) < fraction
    for size in (1, 64, num + 3):
        want = np.full(size, -7)
        positions = np.flatnonzero(mask)[:size]
        want[: len(positions)] = positions
        got = jax.jit(compaction.true_indices, static_argnums=(1, 2))(mask, size, -7)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("num", [16, 250, 256, 257, 1344])
@pytest.mark.parametrize("k", [1, 16])
def test_smallest_in_chunks_is_the_k_smallest_ties_to_the_lower_position(num, k):
    # The two-stage search that accelerators run, here on the CPU: against NumPy's
    # stable sort, with values drawn from a few levels so that ties abound.
    rng = np.random.default_rng(num + k)
    values = rng.integers(0, 5, size=(2, 3, num)).astype(np.float32)
    values[0, 0] = rng.normal(size=num)  # and one row of distinct values
    want = np.argsort(values, axis=-1, kind="stable")[..., :k]
    for chunk in (16, 64, 256):
        got = jax.jit(compaction.smallest_in_chunks, static_argnums=(1, 2))(values, k, chunk)
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(compaction.smallest_indices(values, k), want)
