"""Two ``ota-train --distributed`` processes on 127.0.0.1 (CPU, gloo) against one process.

The pair shares an empty ``data_dir`` (process 0 generates ``ota_shapes/tiny``,
process 1 waits for it) and a workdir (orbax writes one checkpoint from both).
Their parameter replicas must be bit-identical, and equal to those of one
process with two virtual CPU devices fed the same global batches: each global
batch is host 0's slice followed by host 1's, as
``jax.make_array_from_process_local_data`` assembles it in the pair.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
ocp = pytest.importorskip("orbax.checkpoint")
pytest.importorskip("ml_collections")

import jax  # noqa: E402

from ota_train import trainer  # noqa: E402

pytestmark = pytest.mark.slow

STEPS = 2
HOSTS = 2
TIMEOUT_S = 420  # For all runs together: ~100 CPU-seconds, minutes on a loaded 2-core machine.
FINGERPRINT = re.compile(r"Process (\d+) of (\d+): parameters of step (\d+) have fingerprint (\w+)")

# One process with HOSTS devices, trained on the batches each host of the pair reads.
REFERENCE = """
import logging, sys
import numpy as np
from ota_train import input_data, trainer
from ota_train.configs import smoke

workdir, data_dir, steps, hosts = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
host_batches = input_data.train_batches

def global_batches(config, *, start_step=0):
    streams = [
        host_batches(config, start_step=start_step, process_index=i, process_count=hosts)
        for i in range(hosts)
    ]
    for parts in zip(*streams):
        yield {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

input_data.train_batches = global_batches
logging.basicConfig(force=True)
logging.getLogger("ota_train").setLevel(logging.INFO)
config = smoke.get_config()
config.dataset.data_dir = data_dir
config.train.steps = steps
trainer.train_and_evaluate(config, workdir)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(devices: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    return dict(
        env,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        # Fast compiles; the same setting in every run, so the same numerics.
        JAX_DISABLE_MOST_OPTIMIZATIONS="1",
        TF_CPP_MIN_LOG_LEVEL="2",
    )


def start(commands: dict[str, tuple[list[str], dict[str, str]]], logs: Path) -> dict:
    """The commands, started at once, each writing ``<logs>/<name>.log``."""
    procs = {}
    for name, (args, env) in commands.items():
        with open(logs / f"{name}.log", "w") as log:
            procs[name] = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    return procs


def wait_all(procs: dict, logs: Path, *, expected: int = 0, timeout_s=TIMEOUT_S) -> dict:
    """Their logs once all exit (killed after ``timeout_s``), each with status ``expected``."""
    deadline = time.monotonic() + timeout_s
    try:
        while any(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = {name: (logs / f"{name}.log").read_text() for name in procs}
    failed = {name: p.returncode for name, p in procs.items() if p.returncode != expected}
    if failed:
        report = "\n".join(f"==== {name}\n{texts[name][-4000:]}" for name in failed)
        pytest.fail(f"exit codes {failed} (negative: killed after {timeout_s} s)\n{report}")
    return texts


def run_all(
    commands: dict[str, tuple[list[str], dict[str, str]]], logs: Path, *, expect_success=True
) -> dict[str, str]:
    """Runs the commands at once; their logs once all exit (killed on timeout), each
    with status 0 (``expect_success``) or else 1."""
    return wait_all(start(commands, logs), logs, expected=0 if expect_success else 1)


def pair_commands(tmp_path: Path, *args: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Two ``ota-train --distributed`` processes of ``args`` on 127.0.0.1, one device each."""
    port = free_port()
    return {
        f"process{i}": (
            [
                sys.executable,
                "-m",
                "ota_train.main",
                *args,
                f"--workdir={tmp_path / 'pair'}",
                "--compilation_cache=",
                "--distributed",
                f"--coordinator_address=127.0.0.1:{port}",
                f"--num_processes={HOSTS}",
                f"--process_id={i}",
            ],
            environment(devices=1),
        )
        for i in range(HOSTS)
    }


def fingerprints(log: str) -> list[tuple[int, int, int, str]]:
    return [(int(i), int(n), int(s), fp) for i, n, s, fp in FINGERPRINT.findall(log)]


def restored_params(workdir: Path) -> list[tuple[str, np.ndarray]]:
    """The saved parameters (path, array), restored onto this process's one device."""
    directory = str(workdir / trainer.CHECKPOINT_DIR)
    with ocp.CheckpointManager(directory, item_handlers=ocp.StandardCheckpointHandler()) as manager:
        assert manager.all_steps() == [STEPS]
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
            manager.item_metadata(STEPS),
        )
        arrays = manager.restore(STEPS, args=ocp.args.StandardRestore(target))
    leaves = jax.tree_util.tree_flatten_with_path(arrays["params"])[0]
    return sorted((jax.tree_util.keystr(path), np.asarray(leaf)) for path, leaf in leaves)


def test_two_processes_train_like_one_with_two_devices(tmp_path):
    data_dir = tmp_path / "tfds"  # Empty: the pair generates it.
    commands = pair_commands(
        tmp_path,
        "--config",
        "smoke",
        f"--config.dataset.data_dir={data_dir}",
        f"--config.train.steps={STEPS}",
    )
    # Alongside, on a data_dir of its own (the generated data is a function of the seed).
    reference_args = [tmp_path / "single", tmp_path / "tfds_single", STEPS, HOSTS]
    commands["single"] = (
        [sys.executable, "-c", REFERENCE, *map(str, reference_args)],
        environment(devices=HOSTS),
    )
    logs = run_all(commands, tmp_path)

    # The data was generated once, by process 0, and read by both.
    assert "Generating dataset ota_shapes/tiny" in logs["process0"]
    assert "Generating dataset" not in logs["process1"]
    assert "FileExistsError" not in logs["process0"] + logs["process1"]
    assert [p.name for p in (data_dir / "ota_shapes" / "tiny").iterdir()] == ["1.0.0"]
    assert f"on {HOSTS} device(s), {HOSTS} process(es)" in logs["process0"]

    # Bit-identical replicas, equal to the one-process run's parameters.
    (p0,) = fingerprints(logs["process0"])
    (p1,) = fingerprints(logs["process1"])
    (single,) = fingerprints(logs["single"])
    assert (p0[:3], p1[:3], single[:3]) == ((0, HOSTS, STEPS), (1, HOSTS, STEPS), (0, 1, STEPS))
    assert p0[3] == p1[3] == single[3]
    pair, one = restored_params(tmp_path / "pair"), restored_params(tmp_path / "single")
    assert [path for path, _ in pair] == [path for path, _ in one]
    for (path, a), (_, b) in zip(pair, one, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=path)
    assert (tmp_path / "pair" / "eval.json").exists()


def test_a_failure_to_generate_the_data_stops_both_processes_with_a_message(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # data_dir under a file: process 0 cannot create it.
    data_dir = blocker / "tfds"
    commands = pair_commands(tmp_path, "--config", "smoke", f"--config.dataset.data_dir={data_dir}")
    logs = run_all(commands, tmp_path, expect_success=False)
    assert f"ota-train: Not a directory ({data_dir})" in logs["process0"]
    message = f"ota-train: Process 0 could not generate 'ota_shapes/tiny' in {data_dir}"
    assert message in logs["process1"]


def test_sigterm_to_one_process_stops_both_at_one_step_with_one_checkpoint(tmp_path):
    """JAX's preemption service takes SIGTERM under jax.distributed: both processes save
    the step it picks, exit 143, and the pair resumes from there."""
    data_dir, steps = tmp_path / "tfds", 400  # Far more steps than run before the signal.
    flags = ["--config", "smoke", f"--config.dataset.data_dir={data_dir}"]
    flags += [f"--config.optimizer.total_steps={steps}", "--config.train.checkpoint_every=1000"]
    procs = start(pair_commands(tmp_path, *flags, f"--config.train.steps={steps}"), tmp_path)
    metrics = tmp_path / "pair" / "metrics.jsonl"
    deadline = time.monotonic() + TIMEOUT_S
    while not metrics.exists() or metrics.read_text().count('"train/loss"') < 2:
        assert all(p.poll() is None for p in procs.values()), "a process ended early"
        assert time.monotonic() < deadline, "no training step in time"
        time.sleep(0.05)
    procs["process1"].send_signal(signal.SIGTERM)  # Process 0 is not signalled.
    logs = wait_all(procs, tmp_path, expected=128 + signal.SIGTERM, timeout_s=120)

    saved = sorted(int(p.name) for p in (tmp_path / "pair" / trainer.CHECKPOINT_DIR).iterdir())
    assert len(saved) == 1 and 2 <= saved[0] < steps, saved
    for log in logs.values():
        assert f"ota-train: SIGTERM at step {saved[0]}: saved checkpoint {saved[0]} in" in log

    more = saved[0] + 2
    logs = run_all(pair_commands(tmp_path, *flags, f"--config.train.steps={more}"), tmp_path)
    assert f"Resuming from the checkpoint of step {saved[0]} " in logs["process0"]
    (p0,) = fingerprints(logs["process0"])
    (p1,) = fingerprints(logs["process1"])
    assert p0[2] == p1[2] == more and p0[3] == p1[3]
