"""``ota-train`` as a command: signals, an unreadable checkpoint, usage and runtime errors.

Runs use the smoke config (``smoke.py``: 64x64 images, batch 4, 24 steps); the
uninterrupted reference run is the session's (``conftest.py``). Reruns in one
process share its compiled train step; the subprocess runs share a persistent
compilation cache.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("orbax.checkpoint")
pytest.importorskip("ml_collections")

from ota_jax.detector import make_data_mesh
from ota_train import main as cli
from ota_train import trainer
from ota_train.checkpoints import Checkpoints
from ota_train.metrics_writer import read_metrics

from .smoke import (
    STEPS,
    checkpoint_steps,
    command,
    flags,
    saved_arrays,
    smoke_config,
    train_steps,
)


def subprocess_env(cache: Path) -> dict[str, str]:
    return dict(
        os.environ,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_COMPILATION_CACHE_DIR=str(cache),
        # Compile exactly as this process does, for equal numbers.
        JAX_DISABLE_MOST_OPTIMIZATIONS=str(jax.config.read("jax_disable_most_optimizations")),
        JAX_PLATFORMS="cpu",
    )


def assert_same_run(workdir: Path, reference: Path) -> None:
    """Same steps logged once each, same losses, same final arrays, bit for bit."""
    assert train_steps(workdir) == list(range(1, STEPS + 1))
    losses = [r["train/loss"] for r in read_metrics(str(workdir)) if "train/loss" in r]
    ref_losses = [r["train/loss"] for r in read_metrics(str(reference)) if "train/loss" in r]
    assert losses == ref_losses
    got, want = saved_arrays(workdir, STEPS), saved_arrays(reference, STEPS)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    final = [r for r in read_metrics(str(workdir)) if "eval/AP" in r][-1]
    ref_final = [r for r in read_metrics(str(reference)) if "eval/AP" in r][-1]
    assert final == ref_final


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_the_current_step_and_the_rerun_ends_as_an_uninterrupted_run(
    signum, reference, data_dir, tmp_path, tmp_path_factory, caplog
):
    workdir = tmp_path / "run"
    cache = tmp_path_factory.getbasetemp() / "jax_cache"
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [*command(), *flags(workdir, data_dir)],
            env=subprocess_env(cache),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 240  # The first run compiles (cached for the next).
            while len(train_steps(workdir)) < 2:  # Steps are running.
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "no training step within 4 minutes"
                time.sleep(0.02)
            proc.send_signal(signum)
            sent = time.monotonic()
            proc.wait(timeout=60)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
    output = log_path.read_text()
    assert proc.returncode == 128 + signum, output[-3000:]
    assert took < 10, took
    step = train_steps(workdir)[-1]
    assert step < STEPS, "the run ended before the signal: lengthen it"
    assert checkpoint_steps(workdir)[-1] == step
    name = signal.Signals(signum).name
    assert f"ota-train: {name} at step {step}: saved checkpoint {step} in" in output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert "orbax" not in output and "checkpoint_manager.py" not in output  # No chatter.
    assert not (workdir / "eval.json").exists()

    with caplog.at_level(logging.INFO, logger="ota_train"):
        trainer.train_and_evaluate(smoke_config(data_dir), str(workdir))
    assert f"Resuming from the checkpoint of step {step} " in caplog.text
    assert_same_run(workdir, reference)


def test_unreadable_newest_checkpoint_is_reported_and_the_run_resumes_from_the_one_before(
    reference, data_dir, tmp_path, caplog
):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    assert checkpoint_steps(workdir) == [8, 16, 24]
    newest = workdir / trainer.CHECKPOINT_DIR / "24"
    biggest = max((p for p in newest.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(biggest, "r+b") as f:
        f.truncate(100)

    with caplog.at_level(logging.INFO, logger="ota_train"):
        trainer.train_and_evaluate(smoke_config(data_dir), str(workdir))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith("checkpoint 24 unreadable (")
    assert "resuming from 16" in warnings[0]
    assert "Resuming from the checkpoint of step 16 " in caplog.text
    assert (workdir / "checkpoints.unreadable" / "24").is_dir()
    assert_same_run(workdir, reference)


def test_checkpoints_that_all_fail_stop_the_run(reference, tmp_path):
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference / trainer.CHECKPOINT_DIR, directory)
    state = trainer.create_state(smoke_config("unused"), make_data_mesh())
    for step in (8, 16, 24):
        for path in (directory / str(step)).rglob("*"):
            if path.is_file() and path.stat().st_size > 10_000:
                with open(path, "r+b") as f:
                    f.truncate(100)
    checkpoints = Checkpoints(str(directory), max_to_keep=3)
    try:
        with pytest.raises(Exception, match=r"no checkpoint in .* can be read"):
            checkpoints.restore_newest_readable(state)
    finally:
        checkpoints.close()
    assert checkpoint_steps(tmp_path) == [8, 16, 24]  # Nothing set aside.


def test_packaged_configs_validate():
    import importlib

    from ota_train import builders, configs

    for name in configs.available():
        builders.validate(importlib.import_module(f"ota_train.configs.{name}").get_config())


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ota-train", *args, "--compilation_cache="])
    code = exit_info.value.code
    if isinstance(code, str):  # SystemExit(message): Python prints it and exits 1.
        print(code, file=sys.stderr)
        return 1
    return code


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--config.nope=1", "unknown config key 'nope' in --config.nope"),
        ("--config.train.steps=abc", "--config.train.steps=abc: invalid literal"),
        ("--config.loss.ota.num_iters=0", "config.loss.ota: candidate_topk and num_iters"),
        ("--config.dataset.name=nope", "config.dataset.name: Unknown dataset 'nope'"),
        ("--config.dataset.name=ota_shapes/nope", "Unknown ota_shapes config"),
        ("--config.optimizer.name=rmsprop", "config.optimizer: unknown optimizer 'rmsprop'"),
        ("--config.train.checkpoint_every=0", "config.train.checkpoint_every must be"),
        ("--no_such_flag", "Unknown command line flag 'no_such_flag'"),
    ],
)
def test_usage_errors_end_in_one_line_and_status_2(override, message, tmp_path, capsys):
    workdir = tmp_path / "new" / "run"
    assert run_cli([*flags(workdir, str(tmp_path)), override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ota-train: error: ") and "\n" not in err, err
    assert message in err
    assert not (tmp_path / "new").exists()


def test_bad_workdirs_end_in_one_line_and_status_2(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for workdir in (a_file, a_file / "run"):
        assert run_cli(flags(workdir, str(tmp_path))) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f"ota-train: error: --workdir={workdir}: {a_file} is a file, not a directory "
            "(see ota-train --help)"
        )

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # Root writes to a chmod 555 dir.
    workdir = tmp_path / "new" / "run"
    assert run_cli(flags(workdir, str(tmp_path))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ota-train: error: --workdir={workdir} is not writable (Read-only")
    assert not (tmp_path / "new").exists()


def test_missing_data_ends_in_one_line_status_1_and_no_empty_workdir(tmp_path, capsys):
    workdir = tmp_path / "run"
    args = ["--config", "coco_fcos_r50_ota_1x", f"--workdir={workdir}"]
    assert run_cli([*args, f"--config.dataset.data_dir={tmp_path / 'empty'}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ota-train: Dataset 'coco/2017' is not prepared") and "\n" not in err
    assert not workdir.exists()


def test_full_disk_ends_in_one_line_and_status_1(
    reference, data_dir, tmp_path, monkeypatch, capsys
):
    def full(self, state):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.directory)

    monkeypatch.setattr(Checkpoints, "save", full)
    workdir = tmp_path / "run"
    assert run_cli(flags(workdir, data_dir)) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"ota-train: No space left on device ({workdir / 'checkpoints'}); free some space "
        "and rerun: training resumes from the newest checkpoint"
    )


def test_a_finished_run_names_its_outputs(reference, data_dir, tmp_path, caplog):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    with caplog.at_level(logging.INFO, logger="ota_train"), pytest.raises(SystemExit) as done:
        cli.main(["ota-train", *flags(workdir, data_dir), "--compilation_cache="])
    assert done.value.code in (None, 0)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Done:")]
    for name in ("eval.json", "detections.png", "checkpoints", "metrics.jsonl"):
        assert str(workdir / name) in line


def test_help_lists_flags_and_config_keys_and_exits_0():
    result = subprocess.run(
        [*command(), "--help", "--config", "smoke"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for text in ("--workdir", "--config", "--compilation_cache", "train.steps = 6"):
        assert text in result.stdout


def test_a_usage_error_has_no_traceback(tmp_path):
    args = [*command(), "--config", "smoke", "--config.loss.ota.num_iters=0"]
    result = subprocess.run(
        [*args, f"--workdir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("ota-train: error: config.loss.ota")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


# A stand-in for the training loop: compiling (never acknowledging) or saving (acknowledged).
_LOOP = """
import sys, time
from ota_train import interrupts
interrupts.install(grace=1.0)
interrupts.enter_loop()
print("ready", flush=True)
if sys.argv[1] == "saving":
    while not interrupts.requested():
        time.sleep(0.01)
    interrupts.acknowledge()
    print("saving", flush=True)
time.sleep(30)  # A slow save, or a compile in C++ that Python handlers cannot interrupt.
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_the_loop_cannot_take_exits_after_the_grace_and_a_second_one_at_once(signum):
    for mode, signals, why in (
        ("compiling", 1, "while compiling or loading data"),
        ("saving", 2, "again; exiting without waiting"),
    ):
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOOP, mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline() == "ready\n"
        start = time.monotonic()
        proc.send_signal(signum)
        if signals == 2:
            assert proc.stdout.readline() == "saving\n"
            proc.send_signal(signum)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 128 + signum
        assert time.monotonic() - start < 5
        line = err.strip()
        assert line.startswith(f"ota-train: {signal.Signals(signum).name} {why}"), err
        assert "\n" not in line and "Traceback" not in err
