"""Train/eval steps: learning on a fixed batch, schedules, decay mask, data parallelism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ota_jax.detector.model import FCOS, fcos_config
from ota_jax.detector.postprocess import PostprocessConfig
from ota_jax.detector.train_step import (
    OptimizerConfig,
    TrainState,
    create_train_state,
    eval_step,
    make_optimizer,
    make_schedule,
    train_step,
)

REPO = Path(__file__).resolve().parents[1]


def tiny_batch(batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """64x64 noise images with 1-3 boxes each, padded to M = 3."""
    rng = np.random.default_rng(seed)
    boxes = np.zeros((batch_size, 3, 4), np.float32)
    labels = np.full((batch_size, 3), -1, np.int32)
    mask = np.zeros((batch_size, 3), bool)
    for b in range(batch_size):
        for m in range(1 + b % 3):
            x1, y1 = rng.uniform(0, 40, 2)
            w, h = rng.uniform(10, 24, 2)
            boxes[b, m] = [x1, y1, min(x1 + w, 64), min(y1 + h, 64)]
            labels[b, m] = rng.integers(0, 3)
            mask[b, m] = True
    images = rng.normal(size=(batch_size, 64, 64, 3)).astype(np.float32)
    return {"image": images, "gt_boxes": boxes, "gt_labels": labels, "gt_mask": mask}


NUM_STEPS = 60


def fresh_state() -> tuple[FCOS, TrainState]:
    """The tiny model and its train state; the same in every process (fixed seeds)."""
    model = FCOS(fcos_config("tiny", num_classes=3), rngs=nnx.Rngs(0))
    config = OptimizerConfig(learning_rate=0.01, warmup_steps=0, total_steps=100, clip_norm=10.0)
    return model, create_train_state(model, make_optimizer(config), schedule=make_schedule(config))


@pytest.fixture(scope="module")
def training_run():
    """`NUM_STEPS` steps on one fixed batch of 8 on the default (single) device."""
    model, state = fresh_state()
    batch = tiny_batch(8, seed=1)
    history, first_params = [], None
    for _ in range(NUM_STEPS):
        state, metrics = train_step(state, batch)
        history.append({k: float(v) for k, v in metrics.items()})
        if first_params is None:
            first_params = np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)])
    return model, state, batch, history, first_params


def test_loss_decreases_on_a_fixed_batch(training_run):
    model, state, batch, history, _ = training_run
    losses = [metrics["loss"] for metrics in history]
    assert all(np.isfinite(v) for metrics in history for v in metrics.values())
    assert int(state.step) == NUM_STEPS
    assert losses[-1] < 0.6 * losses[0], losses
    assert history[-1]["loss_cls"] < 0.2 * history[0]["loss_cls"]
    assert history[0]["mean_pos_iou"] < 0.1 < 0.5 < history[-1]["mean_pos_iou"]
    assert history[-1]["learning_rate"] == pytest.approx(0.01, rel=1e-5)
    # The original model's buffers survive the donated steps.
    assert np.all(np.isfinite(model.head.scales[0][...]))

    detections = eval_step(state, batch["image"][:2], PostprocessConfig(max_detections=7))
    assert detections.boxes.shape == (2, 7, 4)
    assert detections.scores.shape == detections.classes.shape == detections.valid.shape == (2, 7)


def test_step_schedule_with_warmup():
    config = OptimizerConfig(
        learning_rate=0.1,
        warmup_steps=10,
        warmup_factor=0.01,
        schedule="step",
        decay_steps=(20, 30),
        decay_factor=0.1,
    )
    lr = make_schedule(config)
    assert float(lr(0)) == pytest.approx(0.001, rel=1e-5)
    assert float(lr(5)) == pytest.approx(0.001 + 0.5 * (0.1 - 0.001), rel=1e-5)
    assert float(lr(10)) == pytest.approx(0.1, rel=1e-5)
    assert float(lr(19)) == pytest.approx(0.1, rel=1e-5)
    assert float(lr(20)) == pytest.approx(0.01, rel=1e-5)
    assert float(lr(35)) == pytest.approx(0.001, rel=1e-5)


def test_cosine_schedule_with_warmup():
    config = OptimizerConfig(
        learning_rate=0.1, warmup_steps=10, warmup_factor=0.0, schedule="cosine", total_steps=110
    )
    lr = make_schedule(config)
    assert float(lr(0)) == pytest.approx(0.0, rel=1e-5)
    assert float(lr(10)) == pytest.approx(0.1, rel=1e-5)
    assert float(lr(60)) == pytest.approx(0.05, rel=1e-4)
    assert float(lr(110)) == pytest.approx(0.0, abs=1e-7)


def _is_norm_param(path) -> bool:
    return any(isinstance(key, str) and "norm" in key for key in path[-2:-1])


@pytest.mark.parametrize("name", ["sgd", "adamw"])
@pytest.mark.parametrize("cvpods", [False, True])
def test_weight_decay_skips_norms_biases_and_scales(name, cvpods):
    """With zero gradients and no momentum history only decayed parameters move.

    By default kernels only; with ``decay_biases_and_scales`` (cvpods' D2SGD) every
    parameter but those of norm layers: conv biases and the per-level scales too.
    """
    # All ones, in the train state's structure (traced, not initialised): a zero parameter
    # (a fresh bias) would not move under decay either.
    shapes = jax.eval_shape(lambda: fresh_state()[1].params)
    params = jax.tree.map(lambda x: jnp.ones(x.shape, x.dtype), shapes)
    tx = make_optimizer(
        OptimizerConfig(
            name=name,
            learning_rate=0.1,
            weight_decay=0.5,
            warmup_steps=0,
            decay_biases_and_scales=cvpods,
        )
    )

    @jax.jit
    def first_update(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return tx.update(zeros, tx.init(params), params)[0]

    updates = first_update(params)
    flat = nnx.to_flat_state(updates)
    for path, update in flat:
        moved = bool(np.any(np.asarray(update) != 0))
        decayed = not _is_norm_param(path) and (update.ndim > 1 or cvpods)
        assert moved == decayed, path
    paths = {path for path, _ in flat}
    assert ("head", "scales", 0) in paths and ("head", "cls_logits", "bias") in paths
    assert ("head", "cls_tower", 0, "norm", "scale") in paths
    assert any(u.ndim > 1 for u in jax.tree.leaves(updates))
    assert any(u.ndim <= 1 for u in jax.tree.leaves(updates))


def test_every_norm_layer_is_named_norm():
    """The decay mask finds norm parameters by their module's name: keep that true."""
    from ota_jax.detector.model import FrozenBatchNorm

    config = fcos_config("resnet18", num_classes=2, num_convs=1, backbone_norm="group")
    model = nnx.eval_shape(lambda: FCOS(config, rngs=nnx.Rngs(0)))
    norms = [
        path
        for path, node in nnx.iter_graph(model)
        if isinstance(node, nnx.GroupNorm | nnx.BatchNorm | nnx.LayerNorm | FrozenBatchNorm)
    ]
    assert len(norms) > 20
    assert all("norm" in str(path[-1]) for path in norms), norms


def test_frozen_backbone_stages_are_not_trained():
    """FREEZE_AT=2: the stem and res2 stay as they were; every other parameter moves."""
    config = fcos_config(
        "tiny", num_classes=3, backbone_norm="frozen_batch", backbone_frozen_stages=2
    )
    model = FCOS(config, rngs=nnx.Rngs(0))
    before = {p: np.asarray(v) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    opt = OptimizerConfig(learning_rate=0.01, warmup_steps=0, decay_biases_and_scales=True)
    state = create_train_state(model, make_optimizer(opt))
    trained = {p for p, _ in nnx.to_flat_state(state.params)}
    frozen = set(before) - trained
    assert frozen and all(
        p[:2] in {("backbone", "stem_conv"), ("backbone", "stages")} for p in frozen
    )
    assert all(p[1] == "stem_conv" or p[2] == 0 for p in frozen)
    assert not any(p[:3] == ("backbone", "stages", 1) for p in frozen)
    state, _ = train_step(state, tiny_batch(2, seed=3))
    after = {p: np.asarray(v) for p, v in nnx.to_flat_state(nnx.state(state.model(), nnx.Param))}
    assert after.keys() == before.keys()
    for path in before:
        changed = not np.array_equal(after[path], before[path])
        assert changed == (path in trained), path


def test_clipping_bounds_the_update():
    tx = make_optimizer(
        OptimizerConfig(
            learning_rate=1.0, momentum=0.0, weight_decay=0.0, warmup_steps=0, clip_norm=2.0
        )
    )
    params = {"w": jnp.zeros((3, 3))}
    updates, _ = tx.update({"w": jnp.full((3, 3), 10.0)}, tx.init(params), params)
    assert float(optax.tree.norm(updates)) == pytest.approx(2.0, rel=1e-5)


_MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    jax.config.update("jax_disable_most_optimizations", True)
    from ota_jax.detector.train_step import make_data_mesh, replicate, shard_batch, train_step
    sys.path.insert(0, {tests_dir!r})
    from test_train_step import fresh_state, tiny_batch

    assert jax.device_count() == 8, jax.devices()
    mesh = make_data_mesh()
    state = replicate(fresh_state()[1], mesh)
    batch = shard_batch(tiny_batch(8, seed=1), mesh)
    assert len(batch["image"].addressable_shards) == 8
    state, metrics = train_step(state, batch)
    params = np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)])
    out = {{k: float(v) for k, v in metrics.items()}}
    out["params"] = params.tolist()
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_eight_devices_match_one_device(training_run):
    """The same first step with the batch sharded over 8 fake CPU devices."""
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=f"{REPO}{os.pathsep}" + os.environ.get("PYTHONPATH", ""),
    )
    script = _MULTI_DEVICE_SCRIPT.format(tests_dir=str(REPO / "tests"))
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    eight = json.loads(line[len("RESULT") :])
    _, _, _, history, first_params = training_run
    one = history[0]
    assert eight["num_pos"] == one["num_pos"]
    np.testing.assert_allclose(eight["loss"], one["loss"], rtol=1e-5)
    for name in ("loss_cls", "loss_box", "loss_iou", "grad_norm"):
        np.testing.assert_allclose(eight[name], one[name], rtol=1e-4, err_msg=name)
    np.testing.assert_allclose(eight["params"], first_params, rtol=1e-4, atol=1e-6)
