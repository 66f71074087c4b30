"""``benchmarks/gpu_run.py``: every step's command line is one its script accepts, and a
step past its time limit is ended with its children, keeping what it wrote."""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmarks import gpu_run


@pytest.mark.parametrize("quick", [False, True])
def test_every_step_runs_a_script_with_arguments_it_accepts(tmp_path, quick):
    from benchmarks import bucket_ablation, suite
    from ota_jax._src import buckets

    for step in gpu_run.STEPS:
        cmd = gpu_run.command(step, out=tmp_path, tmp=tmp_path / "t", device="cuda", quick=quick)
        assert cmd[:2] == [sys.executable, "-m"] and cmd[2].startswith("benchmarks.")
        script = importlib.import_module(cmd[2])
        parsed = script.parse_args(cmd[3:])  # exits on an unknown or malformed argument
        assert not any("{" in arg for arg in cmd), cmd
        if script is suite:
            # The suite hands each of its steps more arguments; those must parse too.
            scripts = {"assign": "assign_bench", "train_step": "train_step_bench"}
            assert parsed.device == "cuda"
            for name in parsed.steps:
                nested = importlib.import_module(f"benchmarks.{scripts[name]}")
                nested.parse_args(suite.step_args(parsed, name, cpu=False))
        if script is bucket_ablation:
            variants = bucket_ablation.split_variants(parsed.variants)
            assert variants == ["auto"]
            assert {v.partition(":")[0] for v in variants} <= {"auto", *buckets.CHOICES}


def test_a_step_past_its_limit_is_ended_with_its_children(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # -m slow_step
    script = tmp_path / "slow_step.py"
    grandchild_pid = tmp_path / "grandchild.pid"
    script.write_text(
        textwrap.dedent(
            f"""
            import subprocess, sys, time
            from pathlib import Path
            tmp = Path(sys.argv[1])
            (tmp / "partial.json").write_text("{{}}")
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            Path({str(grandchild_pid)!r}).write_text(str(child.pid))
            time.sleep(60)
            """
        )
    )
    step = gpu_run.Step(
        "slow", 5, "slow_step", (), (), ("{tmp}", "two words"),
        keep=(("partial.json", "kept.json"),),
    )  # fmt: skip
    out = tmp_path / "out"
    args = argparse.Namespace(out_dir=str(out), steps=[step], device="cpu", quick=False)
    start = time.perf_counter()
    assert gpu_run.run(args) == {"slow": 124}
    assert time.perf_counter() - start < 30
    assert (out / "kept.json").read_text() == "{}"
    # The log quotes the command: pasted into a shell it is the same command.
    logged = (out / "gpu_run.log").read_text().split("$ ", 1)[1].splitlines()[0]
    words = shlex.split(logged)
    assert (words[1:3], words[-1], len(words)) == (["-m", "slow_step"], "two words", 5)
    pid = int(grandchild_pid.read_text())
    for _ in range(50):  # the kill is asynchronous
        if not _running(pid):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the step's child outlived the step")


def test_device_cpu_keeps_every_step_off_a_gpu(tmp_path, monkeypatch):
    """Only the suite takes ``--device``; the other steps see JAX_PLATFORMS."""
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # -m platforms
    script = tmp_path / "platforms.py"
    script.write_text(
        "import os, sys\nopen(sys.argv[1], 'w').write(os.environ.get('JAX_PLATFORMS', 'unset'))\n"
    )
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    seen = {}
    for device in ("cpu", "cuda"):
        step = gpu_run.Step("platforms", 30, "platforms", (), (), ("{out}/seen.txt",))
        out = tmp_path / device
        args = argparse.Namespace(out_dir=str(out), steps=[step], device=device, quick=False)
        assert gpu_run.run(args) == {"platforms": 0}
        seen[device] = (out / "seen.txt").read_text()
    assert seen == {"cpu": "cpu", "cuda": "unset"}


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a killed process may stay a zombie until it is reaped)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_steps_must_be_known():
    assert [s.name for s in gpu_run.parse_args(["--out-dir", "x"]).steps] == list(
        gpu_run.DEFAULT_STEPS
    )
    chosen = gpu_run.parse_args(["--out-dir", "x", "--steps", "trace,alone"]).steps
    assert [s.name for s in chosen] == ["alone", "trace"]  # always in the order of STEPS
    with pytest.raises(SystemExit):
        gpu_run.parse_args(["--out-dir", "x", "--steps", "trace,nothing"])


def test_the_steps_fit_the_time_a_gpu_is_lent():
    """A lent GPU may have 15 minutes for start, transfers and the run together, and
    one command may run 10 minutes: the default steps fit the 9 minutes docs/performance.md
    names, and every step together one command."""
    limits = {step.name: step.seconds for step in gpu_run.STEPS}
    assert sum(limits[name] for name in gpu_run.DEFAULT_STEPS) <= 9 * 60
    assert sum(limits.values()) <= 10 * 60
