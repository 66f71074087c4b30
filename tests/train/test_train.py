"""``ota-train`` end to end on the smoke config: outputs, resume, SIGKILL, NaN.

Runs are tiny (``smoke.py``: 64x64 images, batch 4, 24 steps); the uninterrupted
reference run is the session's (``conftest.py``). Runs in one process share one
compiled train step (same config, same optimizer objects); the subprocess runs
share a persistent compilation cache.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("orbax.checkpoint")
pytest.importorskip("ml_collections")

import ota_jax
from ota_jax.data.registry import DatasetNotPreparedError
from ota_train import configs, input_data, trainer
from ota_train import main as cli
from ota_train.builders import optimizer_config
from ota_train.configs import smoke
from ota_train.metrics_writer import read_metrics

from .smoke import (
    STEPS,
    checkpoint_steps,
    command,
    flags,
    saved_params,
    smoke_config,
    train_records,
)

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def cli_args(workdir: Path, data_dir: str, steps: int = STEPS) -> list[str]:
    """``ota-train`` with the flags equivalent to ``smoke_config(data_dir, steps)``."""
    return [*command(), *flags(workdir, data_dir, steps)]


def restored_params(workdir: Path, step: int) -> list[np.ndarray]:
    """The parameters saved at ``step``, as numpy leaves in path order."""
    return [leaf for _, leaf in sorted(saved_params(workdir, step).items())]


def assert_params_close(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_run_writes_metrics_events_checkpoints_eval_and_picture(smoke_run):
    workdir, metrics = smoke_run.workdir, smoke_run.metrics
    records = train_records(workdir)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert all(np.isfinite(r["train/loss"]) and r["train/steps_per_sec"] > 0 for r in records)
    # The total first rises with the IoU-weighted box loss (see test_train_step); the class
    # loss falls from the start.
    assert records[-1]["train/loss_cls"] < records[0]["train/loss_cls"]
    (final_eval,) = [r for r in read_metrics(str(workdir)) if "eval/AP" in r]
    assert final_eval["step"] == STEPS

    import tensorflow as tf

    events = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    tags: dict[str, list[int]] = {}
    for path in events:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                tags.setdefault(value.tag, []).append(event.step)
    assert tags["train/loss"] == list(range(1, STEPS + 1))
    assert tags["eval/AP"] == [STEPS]

    assert checkpoint_steps(workdir) == [8, 16, 24]
    assert all(np.isfinite(p).all() for p in restored_params(workdir, STEPS))

    assert set(metrics) == set(METRIC_NAMES)
    saved = json.loads((workdir / "eval.json").read_text())
    assert set(saved) == set(METRIC_NAMES)
    assert all(0.0 <= saved[name] <= 1.0 for name in METRIC_NAMES)
    assert saved == pytest.approx(metrics)

    picture = workdir / "detections.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    assert imread(picture).shape[0] > 100
    assert (workdir / "config.json").exists()


@pytest.mark.slow
def test_rerun_with_more_steps_resumes_from_the_checkpoint(reference, data_dir, tmp_path):
    half = STEPS // 2
    trainer.train_and_evaluate(smoke_config(data_dir, steps=half), str(tmp_path))
    assert checkpoint_steps(tmp_path) == [8, half]
    logged_before = len(read_metrics(str(tmp_path)))

    trainer.train_and_evaluate(smoke_config(data_dir), str(tmp_path))
    records = read_metrics(str(tmp_path))
    first_new = next(r for r in records[logged_before:] if "train/loss" in r)
    assert first_new["step"] == half + 1
    assert [r["step"] for r in train_records(tmp_path)] == list(range(1, STEPS + 1))
    assert checkpoint_steps(tmp_path)[-1] == STEPS

    # The same batches and the same steps as the uninterrupted run.
    ref_workdir = reference
    ref_losses = [r["train/loss"] for r in train_records(ref_workdir)]
    np.testing.assert_allclose(
        [r["train/loss"] for r in train_records(tmp_path)], ref_losses, rtol=1e-5
    )
    assert_params_close(restored_params(tmp_path, STEPS), restored_params(ref_workdir, STEPS))


@pytest.mark.slow
def test_sigkill_then_rerun_completes_like_an_uninterrupted_run(
    reference, data_dir, tmp_path, tmp_path_factory, caplog
):
    cache = tmp_path_factory.getbasetemp() / "jax_cache"
    env = dict(
        os.environ,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        # Compile exactly as the in-process reference run did, for equal numbers.
        JAX_DISABLE_MOST_OPTIMIZATIONS=str(jax.config.read("jax_disable_most_optimizations")),
        JAX_PLATFORMS="cpu",
    )
    workdir = tmp_path / "run"
    args = [*cli_args(workdir, data_dir), f"--compilation_cache={cache}"]
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not checkpoint_steps(workdir):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 3 minutes"
            time.sleep(0.02)
        still_running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert still_running and proc.returncode == -signal.SIGKILL
    saved_at_kill = checkpoint_steps(workdir)
    assert saved_at_kill and saved_at_kill[-1] < STEPS, saved_at_kill
    assert not (workdir / "eval.json").exists()
    assert any(cache.iterdir()), "--compilation_cache: nothing cached"

    # The rerun (in this process, where the train step is compiled already) resumes.
    with caplog.at_level(logging.INFO, logger="ota_train"):
        trainer.train_and_evaluate(smoke_config(data_dir), str(workdir))
    assert f"Resuming from the checkpoint of step {saved_at_kill[-1]}" in caplog.text

    # Same total number of steps, each logged once, every checkpoint readable.
    assert [r["step"] for r in train_records(workdir)] == list(range(1, STEPS + 1))
    for step in checkpoint_steps(workdir):
        assert all(np.isfinite(p).all() for p in restored_params(workdir, step))
    assert checkpoint_steps(workdir)[-1] == STEPS
    leftovers = [p.name for p in (workdir / trainer.CHECKPOINT_DIR).iterdir() if "tmp" in p.name]
    assert not leftovers
    assert (workdir / "eval.json").exists() and (workdir / "detections.png").exists()

    ref_workdir = reference
    np.testing.assert_allclose(
        [r["train/loss"] for r in train_records(workdir)],
        [r["train/loss"] for r in train_records(ref_workdir)],
        rtol=1e-5,
    )
    assert_params_close(restored_params(workdir, STEPS), restored_params(ref_workdir, STEPS))


def test_nan_loss_stops_with_its_step_and_keeps_the_last_good_checkpoint(
    reference, data_dir, tmp_path, monkeypatch
):
    bad_step = 11
    real_batches = input_data.train_batches

    def poisoned(config, *, start_step=0):
        """The real stream with NaN pixels in the batch of ``bad_step``."""
        for step, batch in enumerate(real_batches(config, start_step=start_step), start_step + 1):
            if step == bad_step:
                batch = dict(batch, image=np.full_like(batch["image"], np.nan))
            yield batch

    monkeypatch.setattr(input_data, "train_batches", poisoned)
    with pytest.raises(trainer.NonFiniteLossError, match=f"at step {bad_step};") as error:
        trainer.train_and_evaluate(smoke_config(data_dir), str(tmp_path))
    assert error.value.step == bad_step
    assert error.value.last_checkpoint == 8
    assert "last good checkpoint is step 8" in str(error.value)

    assert checkpoint_steps(tmp_path) == [8]
    assert all(np.isfinite(p).all() for p in restored_params(tmp_path, 8))
    assert [r["step"] for r in train_records(tmp_path)] == list(range(1, bad_step))
    assert not (tmp_path / "eval.json").exists()


def test_cli_turns_expected_failures_into_a_clear_exit(monkeypatch, tmp_path):
    errors = [
        trainer.NonFiniteLossError(7, float("nan"), 4, "/some/checkpoints"),
        DatasetNotPreparedError("Dataset 'coco/2017' is not prepared in /x. Run `tfds build`"),
    ]
    messages = []
    for error in errors:

        def fail(config, workdir, error=error):
            raise error

        monkeypatch.setattr(trainer, "train_and_evaluate", fail)
        with pytest.raises(SystemExit) as exit_info:
            cli.main(
                ["ota-train", "--config", "smoke", f"--workdir={tmp_path}", "--compilation_cache="]
            )
        messages.append(str(exit_info.value.code))
    assert messages[0].startswith("ota-train: Non-finite loss (nan) at step 7;")
    assert "last good checkpoint is step 4 in /some/checkpoints" in messages[0]
    assert messages[1].startswith("ota-train: Dataset 'coco/2017' is not prepared")


def test_missing_data_stops_before_the_model_is_built(tmp_path):
    config = importlib.import_module("ota_train.configs.coco_fcos_r50_ota_1x").get_config()
    config.dataset.data_dir = str(tmp_path / "empty")
    with pytest.raises(DatasetNotPreparedError, match="tfds build coco/2017"):
        trainer.train_and_evaluate(config, str(tmp_path / "run"))


def test_config_names_and_paths_resolve():
    assert configs.available() == ["coco_fcos_r50_ota_1x", "shapes", "smoke", "study"]
    by_name = configs.resolve_config_path("smoke")
    assert Path(by_name) == configs.CONFIG_DIR / "smoke.py"
    assert configs.resolve_config_path(by_name) == by_name
    assert configs.resolve_config_path("train/configs/shapes.py").endswith("shapes.py")
    assert configs.resolve_config_path("shapes:arg").endswith("shapes.py:arg")
    with pytest.raises(FileNotFoundError, match="smoke"):
        configs.resolve_config_path("no_such_config")


def test_packaged_configs_build_library_configs():
    from ota_train import builders

    for name in configs.available():
        config = importlib.import_module(f"ota_train.configs.{name}").get_config()
        optimizer = optimizer_config(config)
        assert optimizer.total_steps == config.train.steps
        builders.loss_config(config)
        builders.postprocess_config(config)
        builders.image_size(config)
    coco = importlib.import_module("ota_train.configs.coco_fcos_r50_ota_1x").get_config()
    recipe = optimizer_config(coco)
    assert (recipe.name, recipe.learning_rate, recipe.momentum, recipe.weight_decay) == (
        "sgd", 0.01, 0.9, 1e-4,
    )  # fmt: skip
    assert (recipe.total_steps, recipe.decay_steps) == (90_000, (60_000, 80_000))
    assert coco.train.batch_size == 16 and builders.image_size(coco) == (800, 1344)
    assert builders.model_config(coco, 80).backbone == "resnet50"
    # cvpods' D2SGD: conv biases and per-level scales decayed too, norms not.
    assert (
        recipe.decay_biases_and_scales
        and not optimizer_config(smoke.get_config()).decay_biases_and_scales
    )
    # The official HEAD's box loss.
    assert builders.loss_config(coco).box_loss == "giou"
    scratch = builders.model_config(coco, 80)
    assert (scratch.backbone_norm, scratch.backbone_frozen_stages) == ("group", 0)
    coco.model.pretrained = "/weights/resnet50.pth"
    pretrained = builders.model_config(coco, 80)
    assert (pretrained.backbone_norm, pretrained.backbone_frozen_stages) == ("frozen_batch", 2)
    coco.model.overrides.backbone_frozen_stages = 1
    assert builders.model_config(coco, 80).backbone_frozen_stages == 1
    coco.model.overrides.backbone_norm = "group"
    with pytest.raises(builders.ConfigError, match="frozen_batch"):
        builders.model_config(coco, 80)
    tiny = smoke.get_config()
    tiny.model.pretrained = "/weights/resnet50.pth"
    with pytest.raises(builders.ConfigError, match="tiny"):
        builders.model_config(tiny, 80)

    tuned = smoke.get_config()
    tuned.model.overrides.fpn_width = 16
    tuned.loss.ota.num_iters = 7
    tuned.loss.overrides.box_weight = 1.0
    assert builders.model_config(tuned, 6).fpn_width == 16
    assert builders.model_config(smoke.get_config(), 6).fpn_width == 32  # The preset's.
    loss = builders.loss_config(tuned)
    assert (loss.assigner_config.num_iters, loss.box_weight) == (7, 1.0)
    assert builders.loss_config(smoke.get_config()).assigner_config is None
    tuned.loss.assigner = "hungarian"
    with pytest.raises(ValueError, match="hungarian"):
        builders.loss_config(tuned)


@pytest.mark.slow
def test_pretrained_backbone_is_loaded_into_the_train_state(tmp_path, caplog):
    """``model.pretrained``: the weights land in the state, stem and res2 frozen."""
    from flax import nnx

    from ota_jax.detector import make_data_mesh
    from tests.test_pretrained import random_state_dict

    weights = random_state_dict("resnet18", seed=4)
    np.savez(tmp_path / "resnet18.npz", **weights)
    config = smoke.get_config()
    config.model.preset = "resnet18"
    config.model.overrides.strides = (8, 16, 32)
    config.model.overrides.fpn_width = 16
    config.model.overrides.num_convs = 1
    config.model.overrides.num_groups = 4
    config.model.pretrained = str(tmp_path / "resnet18.npz")
    with caplog.at_level(logging.INFO, logger=trainer.__name__):
        state = trainer.create_state(config, make_data_mesh())
    assert "resnet18.npz" in caplog.text
    params = dict(nnx.to_flat_state(state.params))
    rest = dict(nnx.to_flat_state(state.rest))
    hwio = lambda name: weights[name].transpose(2, 3, 1, 0)
    stem = ("backbone", "stem_conv", "kernel")
    np.testing.assert_array_equal(rest[stem][...], hwio("conv1.weight"))
    res2 = ("backbone", "stages", 0, 1, "conv2", "kernel")
    np.testing.assert_array_equal(rest[res2][...], hwio("layer1.1.conv2.weight"))
    res3 = ("backbone", "stages", 1, 0, "conv1", "kernel")
    np.testing.assert_array_equal(params[res3][...], hwio("layer2.0.conv1.weight"))
    assert stem not in params and res2 not in params
    running_var = ("backbone", "stages", 2, 0, "norm1", "var")
    np.testing.assert_array_equal(rest[running_var][...], weights["layer3.0.bn1.running_var"])


def test_every_registered_assigner_is_a_config_choice_with_its_settings():
    from ota_jax.assigners import ASSIGNERS
    from ota_train import builders

    for name, spec in ASSIGNERS.items():
        config = smoke.get_config()
        config.loss.assigner = name
        loss = builders.loss_config(config)
        assert (loss.assigner, loss.assigner_config) == (name, None)  # the library defaults
        assert set(config.loss[name]) <= {f.name for f in dataclasses.fields(spec.config_class)}
    config = smoke.get_config()
    config.loss.assigner = "atss"
    config.loss.atss.topk = 5
    assert builders.loss_config(config).assigner_config == ota_jax.ATSSConfig(topk=5)
    config.loss.atss.topk = 0  # the config class's own validation speaks
    with pytest.raises(ValueError, match="topk"):
        builders.loss_config(config)
