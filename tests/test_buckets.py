"""The bucket runners pick the smallest static size that holds the batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ota_jax
from ota_jax import Assignment
from ota_jax._src import buckets
from ota_jax._src.inputs import AssignArgs

pytestmark = pytest.mark.core  # Needs only the core dependencies.

# The doubling ladders (the CPU's product of gt and column sizes), also for the
# small problems here.
BUCKETED = buckets.CPU_LADDER_SIZES


def test_ladder_ends_at_the_limit():
    assert buckets.ladder(100, start=8, factor=2) == (8, 16, 32, 64, 100)
    assert buckets.ladder(100, start=8, factor=4) == (8, 32, 100)
    assert buckets.ladder(8, start=8, factor=2) == (8,)
    assert buckets.ladder(5, start=8, factor=2) == (5,)


def test_accelerators_get_fewer_buckets(monkeypatch):
    """Off the CPU, columns start at 1024 and grow fourfold, and nothing is chunked."""
    monkeypatch.delenv("OTA_JAX_BUCKETS", raising=False)
    assert buckets.resolve_sizes("auto", backend="cpu") == buckets.CPU_SIZES
    sizes = buckets.resolve_sizes("auto", backend="gpu")
    assert sizes == buckets.ACCELERATOR_SIZES
    assert sizes.pairs_at_once is None and sizes.gts_at_once is None
    for needed, want in ((300, 1024), (1025, 4096), (5000, -1)):
        assert _column_bucket(needed, 4096, sizes) == want


def _column_bucket(needed: int, limit: int | None, sizes) -> int:
    """The column bucket `by_real_gts` runs 8 real gts of 8 slots at (-1: all anchors)."""
    gt_mask = jnp.ones((1, 8), bool)
    args = AssignArgs(
        None, None, jnp.zeros((8400, 2)), None, np.zeros((1, 8, 4)), np.zeros((1, 8), int), gt_mask
    )
    run = buckets.by_real_gts(args, _sizes_run, sizes=sizes, columns=(jnp.int32(needed), limit))
    return int(run.ious[0, 0])


@pytest.mark.parametrize(
    ("needed", "limit", "want"),
    [
        (300, 4096, 512),
        (513, 4096, 1024),
        (1025, 4096, 2048),
        (4096, 4096, 4096),
        (5000, 4096, -1),
        (300, None, -1),
        (8000, 8400, 8192),
        (8300, 8400, -1),
        (10, 600, 512),
        (550, 600, 600),
    ],
)
def test_columns_run_at_the_smallest_bucket(needed, limit, want):
    assert _column_bucket(needed, limit, BUCKETED) == want


def test_by_real_gts_cuts_to_real_gts_first_and_restores_the_order():
    gt_mask = np.zeros((2, 40), bool)
    gt_mask[0, [3, 17, 30]] = True
    gt_mask[1, [0, 39]] = True
    labels = np.arange(80).reshape(2, 40)

    def run(args):
        cut_labels, cut_mask = args[5], args[6]
        # Every anchor takes the last real gt of its image; k = label; num_fg = the
        # bucket's gt rows (every bucket is traced, one runs).
        last = cut_mask.sum(axis=1) - 1
        gt_index = jnp.broadcast_to(last[:, None], (2, 5))
        rows = jnp.full(2, cut_mask.shape[1], jnp.int32)
        zeros = jnp.zeros((2, 5))
        return Assignment(gt_index, gt_index >= 0, gt_index, zeros, zeros, rows, cut_labels)

    args = AssignArgs(None, None, np.zeros((5, 2)), None, np.zeros((2, 40, 4)), labels, gt_mask)
    result = buckets.by_real_gts(args, run, sizes=BUCKETED)
    np.testing.assert_array_equal(result.num_fg, [8, 8])  # 3 real gts: the smallest bucket
    np.testing.assert_array_equal(result.gt_index[:, 0], [30, 39])
    np.testing.assert_array_equal(np.asarray(result.dynamic_k)[0, [3, 17, 30]], [3, 17, 30])
    np.testing.assert_array_equal(np.asarray(result.dynamic_k)[1, [0, 39]], [40, 79])


@pytest.mark.parametrize("name", ["ota", "fcos"])
def test_buckets_off_traces_fewer_sizes_and_assigns_the_same(name):
    """``sizes="off"``: fewer switches (on these 336 anchors, none of sizes), the
    same assignment as with the buckets."""
    import importlib

    from ota_jax import assigners
    from tests.scenes import make_scene, padded

    rng = np.random.default_rng(3)
    scenes = [make_scene(rng, num_gt=n, image_size=(128, 128)) for n in (2, 5)]
    gts = [padded(s, 12)[:3] for s in scenes]
    stack = lambda key: np.stack([getattr(s, key) for s in scenes])
    args = (stack("pred_boxes"), stack("cls_logits"), scenes[0].points, scenes[0].strides)
    args = AssignArgs(*args, *(np.stack(x) for x in zip(*gts, strict=True)), stack("obj_logits"))
    spec = assigners.ASSIGNERS[name]
    module = f"ota_jax.baselines.{name}" if name == "fcos" else f"ota_jax.{name}"
    assign_batch = importlib.import_module(module)._assign_batch

    def trace_and_run(sizes):
        config = spec.config_class(sizes=buckets.resolve_sizes(sizes))
        jaxpr = str(jax.make_jaxpr(lambda *a: assign_batch(AssignArgs(*a), config))(*args))
        return jaxpr.count("cond["), assign_batch(args, config)

    switches, bucketed = trace_and_run(BUCKETED)
    switches_off, single = trace_and_run("off")
    assert switches_off < switches
    public = spec.assign_batch(*args[:7], obj_logits=args[7], config=spec.config_class(sizes="off"))
    np.testing.assert_array_equal(public.gt_index, bucketed.gt_index)
    np.testing.assert_array_equal(single.gt_index, bucketed.gt_index)
    np.testing.assert_allclose(single.ious, bucketed.ious, atol=1e-6)


def test_simota_is_one_program_in_tiles_whatever_the_batch_needs():
    """SimOTA has no size switch: its tiles loop as often as the batch needs (tiny
    tiles here: many steps), with the padded program's assignment."""
    from tests.scenes import make_scene, padded

    rng = np.random.default_rng(8)
    scenes = [make_scene(rng, num_gt=n, image_size=(128, 128)) for n in (7, 0, 11)]
    gts = [padded(s, 16)[:3] for s in scenes]
    stack = lambda key: np.stack([getattr(s, key) for s in scenes])
    args = (stack("pred_boxes"), stack("cls_logits"), scenes[0].points, scenes[0].strides)
    args = (*args, *(np.stack(x) for x in zip(*gts, strict=True)))
    args[6][2, 4] = False  # a padded slot among the real gts

    def run(sizes):
        config = ota_jax.SimOTAConfig(sizes=sizes)
        call = lambda *a: ota_jax.simota_assign_batch(
            *a, obj_logits=stack("obj_logits"), config=config
        )
        return str(jax.make_jaxpr(call)(*args)), call(*args)

    jaxpr, tiled = run(buckets.Sizes(max_pairs=0, tile=(3, 40)))
    assert "cond[" not in jaxpr and "while[" in jaxpr
    _, whole = run("off")
    for field in ("gt_index", "labels", "dynamic_k", "num_fg"):
        np.testing.assert_array_equal(getattr(tiled, field), getattr(whole, field))
    np.testing.assert_allclose(tiled.ious, whole.ious, atol=1e-6)
    assert int(tiled.num_fg[1]) == 0 and int(tiled.num_fg[2]) > 0


def test_buckets_environment_variable_is_checked(monkeypatch):
    """``"auto"`` reads OTA_JAX_BUCKETS; a name given outright does not."""
    monkeypatch.setenv("OTA_JAX_BUCKETS", "accelerator")
    assert buckets.resolve_sizes() == buckets.ACCELERATOR_SIZES
    assert buckets.resolve_sizes("cpu") == buckets.CPU_SIZES
    monkeypatch.setenv("OTA_JAX_BUCKETS", "off")
    assert buckets.resolve_sizes("auto", backend="cpu").off
    assert buckets.resolve_sizes("auto", backend="cpu").pairs_at_once is not None
    assert buckets.resolve_sizes("auto", backend="gpu").pairs_at_once is None
    monkeypatch.setenv("OTA_JAX_BUCKETS", "fast")
    with pytest.raises(ValueError, match="OTA_JAX_BUCKETS='fast'"):
        buckets.resolve_sizes()
    with pytest.raises(ValueError, match="sizes='fast'"):
        buckets.resolve_sizes("fast")
    with pytest.raises(TypeError, match="resolve_sizes"):
        buckets.images_at_once(4, 10, "auto")


def test_sizes_are_static_config_fields_resolved_outside_the_trace(monkeypatch):
    """Every config takes ``sizes`` (hashable, a static jit argument); the traced
    program reads neither the environment nor the backend."""
    from ota_jax import assigners
    from tests.scenes import make_scene

    for spec in assigners.ASSIGNERS.values():
        for sizes in ("auto", "cpu", "accelerator", "off", buckets.Sizes(gt_start=4)):
            hash(spec.config_class(sizes=sizes))
    scene = make_scene(np.random.default_rng(0), num_gt=3, image_size=(64, 64))
    config = ota_jax.SimOTAConfig(sizes=buckets.resolve_sizes("cpu"))
    monkeypatch.setenv("OTA_JAX_BUCKETS", "not a choice")  # read it and fail
    monkeypatch.setattr(jax, "default_backend", lambda: 1 / 0)
    result = ota_jax.simota_assign(*scene.args, np.ones(3, bool), config=config)
    assert int(result.num_fg) > 0


def test_sizes_given_as_pairs_and_small_problems_as_one_program():
    """``pairs``: the (gts, columns) buckets themselves, rounded up, ended by all gts at
    the largest gathered size and at all anchors; ``max_pairs``: no bucket at all."""
    gt_mask = np.zeros((2, 100), bool)
    gt_mask[1, :3] = True
    args = AssignArgs(None, None, jnp.zeros((8400, 2)), None, np.zeros((2, 100, 4)), None, gt_mask)
    args = args._replace(gt_labels=np.zeros((2, 100), int))
    pairs = buckets.Sizes(pairs=((16, 512), (16, 1000), (32, 2048), (None, 2048), (64, 1024)))

    def branches(sizes, needed=300):
        run = lambda n: buckets.by_real_gts(args, _sizes_run, sizes=sizes, columns=(n, 4096))
        eqns = jax.make_jaxpr(run)(jnp.int32(needed)).eqns
        conds = [e for e in eqns if e.primitive.name == "cond"]
        return len(conds[0].params["branches"]) if conds else 1, run(jnp.int32(needed))

    # (16, 512), (16, 1024), (32, 2048), (100, 2048), (100, 4096), (100, all); (64, 1024)
    # is held by (100, 2048) before it.
    count, result = branches(pairs)
    assert count == 6
    np.testing.assert_array_equal(result.num_fg, [16, 16])
    np.testing.assert_array_equal(result.ious[:, 0], [512, 512])
    count, result = branches(pairs, needed=1500)
    np.testing.assert_array_equal(result.num_fg, [32, 32])
    count, result = branches(pairs, needed=3000)
    np.testing.assert_array_equal(result.num_fg, [100, 100])
    np.testing.assert_array_equal(result.ious[:, 0], [4096, 4096])
    assert buckets.Sizes(pairs=[[16, 512]]) == buckets.Sizes(pairs=((16, 512),))
    with pytest.raises(ValueError, match="positive"):
        buckets.Sizes(pairs=((0, 512),))
    count, result = branches(buckets.Sizes(max_pairs=100 * 8400))
    assert count == 2  # all gts: max_columns or all anchors
    np.testing.assert_array_equal(result.num_fg, [100, 100])


@pytest.mark.parametrize("chunk", [1, 2, 3, 6])
def test_vmap_in_chunks_is_vmap(chunk):
    rng = np.random.default_rng(chunk)
    x = rng.normal(size=(6, 5)).astype(np.float32)
    y = rng.normal(size=(6, 5, 2)).astype(np.float32)

    def fn(a, none, b):
        assert none is None
        return {"sum": a + b.sum(-1), "max": b.max()}

    want = jax.vmap(lambda a, b: fn(a, None, b))(x, y)
    got = jax.jit(lambda x, y: buckets.vmap_in_chunks(fn, chunk, x, None, y))(x, y)
    np.testing.assert_allclose(got["sum"], want["sum"], rtol=1e-6)
    np.testing.assert_array_equal(got["max"], want["max"])


def test_images_at_once_divides_the_batch_and_fits_the_cpu_limit():
    assert buckets.images_at_once(16, 1 << 30, buckets.ACCELERATOR_SIZES) == 16
    cpu = buckets.CPU_SIZES
    limit = cpu.pairs_at_once
    assert buckets.images_at_once(16, 100, cpu) == 16
    assert buckets.images_at_once(16, limit // 5, cpu) == 4  # 5 fit; 4 divides 16
    assert buckets.images_at_once(7, limit // 5, cpu) == 1  # 7 is prime
    assert buckets.images_at_once(16, limit * 3, cpu) == 1


@pytest.mark.parametrize("num_gt", [5, 32, 33, 100])
def test_any_over_gts_is_the_or_over_every_gt(num_gt):
    """In slices of at most 32 gts on a CPU (the last one padded with invalid gts),
    the OR over gts equals the OR over all of them at once; invalid gts add nothing."""
    rng = np.random.default_rng(num_gt)
    points = rng.uniform(0, 64, size=(40, 2)).astype(np.float32)
    corner = rng.uniform(0, 56, size=(3, num_gt, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(1, 8, size=(3, num_gt, 2))], -1)
    boxes = jnp.asarray(boxes, jnp.float32)
    mask = jnp.asarray(rng.random((3, num_gt)) < 0.7)

    def inside(boxes, mask):  # [B, M, A]: the point is in a valid gt's box
        x, y = points[:, 0], points[:, 1]
        lo_x, lo_y, hi_x, hi_y = (boxes[..., i, None] for i in range(4))
        return mask[..., None] & (x > lo_x) & (x < hi_x) & (y > lo_y) & (y < hi_y)

    cpu = buckets.CPU_SIZES
    got = jax.jit(lambda b, m: buckets.any_over_gts(inside, b, m, cpu))(boxes, mask)
    want = inside(boxes, mask).any(axis=1)
    assert want.any() and not want.all()
    np.testing.assert_array_equal(got, want)
    if num_gt > cpu.gts_at_once:  # the slices do run in a loop
        jaxpr = jax.make_jaxpr(lambda b, m: buckets.any_over_gts(inside, b, m, cpu))(boxes, mask)
        assert "scan" in str(jaxpr)


def _sizes_run(args, columns=None):
    """Reports the bucket it ran at: gt rows in num_fg, columns in ious (-1: all anchors)."""
    num_images, rows = args.gt_mask.shape
    size = -1.0 if columns is None else float(columns)
    gt_index = jnp.full((num_images, 3), -1)
    return Assignment(
        gt_index=gt_index,
        fg_mask=gt_index >= 0,
        labels=gt_index,
        box_targets=jnp.zeros((num_images, 3, 4)),
        ious=jnp.full((num_images, 3), size),
        num_fg=jnp.full(num_images, rows),
        dynamic_k=jnp.zeros((num_images, rows), jnp.int32),
    )


@pytest.mark.parametrize(
    ("real", "needed", "want_rows", "want_columns"),
    [
        (3, 300, 8, 512),
        (9, 300, 16, 512),
        (3, 5000, 8, -1),
        (40, 1025, 64, 2048),
        (100, 8400, 100, -1),
    ],
)
def test_by_real_gts_with_columns_picks_both_buckets_in_one_switch(
    real, needed, want_rows, want_columns
):
    gt_mask = np.zeros((2, 100), bool)
    gt_mask[1, :real] = True
    args = AssignArgs(
        None,
        None,
        jnp.zeros((8400, 2)),
        None,
        np.zeros((2, 100, 4)),
        np.zeros((2, 100), int),
        gt_mask,
    )
    run = lambda needed: buckets.by_real_gts(
        args, _sizes_run, sizes=BUCKETED, columns=(needed, 4096)
    )
    result = run(jnp.int32(needed))
    np.testing.assert_array_equal(result.num_fg, [want_rows] * 2)
    np.testing.assert_array_equal(result.ious[:, 0], [want_columns] * 2)
    # Both sizes in one lax.switch: a GPU waits for one branch index, not two.
    conds = [e for e in jax.make_jaxpr(run)(jnp.int32(needed)).eqns if e.primitive.name == "cond"]
    assert len(conds) == 1
    assert len(conds[0].params["branches"]) == 5 * 5  # gt sizes x (column sizes + all)


def test_on_real_gts_runs_on_the_real_gts_first_at_the_smallest_bucket():
    gt_mask = np.zeros((2, 40), bool)
    gt_mask[0, [5, 30]] = True
    gt_mask[1, [2, 3, 4, *range(10, 20), 39]] = True  # 14 real gts: bucket 16
    labels = np.arange(80).reshape(2, 40)
    args = AssignArgs(None, None, np.zeros((5, 2)), None, np.zeros((2, 40, 4)), labels, gt_mask)
    rows, first = buckets.on_real_gts(
        args, lambda a: (jnp.full(2, a[6].shape[1]), a[5][:, 0]), sizes=BUCKETED
    )
    np.testing.assert_array_equal(rows, [16, 16])
    np.testing.assert_array_equal(first, [5, 42])
