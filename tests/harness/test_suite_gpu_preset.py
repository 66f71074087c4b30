"""The GPU runbook, the suite's ``gpu`` preset: its steps fit the time a GPU is lent,
``--device cpu`` keeps every step off a GPU, and it runs end to end at smoke-test sizes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks import harness, suite


def test_the_steps_fit_the_time_a_gpu_is_lent():
    """A lent GPU may have 15 minutes for start, transfers and the run together, and
    one command may run 10 minutes: the default steps fit the 9 minutes docs/performance.md
    names, and every step together one command."""
    limits = {step.name: step.limit_s for step in suite.PRESETS["gpu"]}
    assert sum(limits[name] for name in suite.DEFAULT_STEPS["gpu"]) <= 9 * 60
    assert sum(limits.values()) <= 10 * 60


def test_steps_must_be_known():
    steps = suite.parse_args(["--preset", "gpu"]).steps
    assert (
        [s.name for s in steps]
        == list(suite.DEFAULT_STEPS["gpu"])
        == [
            "alone",
            "assign",
            "train_step",
        ]
    )
    chosen = suite.parse_args(["--preset", "gpu", "--steps", "trace,alone"]).steps
    assert [s.name for s in chosen] == ["alone", "trace"]  # always in the preset's order
    for steps in ("trace,nothing", "scaling"):  # scaling is a step of the cpu preset
        with pytest.raises(SystemExit):
            suite.parse_args(["--preset", "gpu", "--steps", steps])


def test_device_cpu_keeps_every_step_off_a_gpu(tmp_path, monkeypatch):
    """Only assign_bench takes ``--device``; the other steps see JAX_PLATFORMS."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "platforms.py").write_text(
        "import os, sys\n"
        "open(sys.argv[sys.argv.index('--out') + 1], 'w')"
        ".write(os.environ.get('JAX_PLATFORMS', 'unset'))\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(modules))
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    seen = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        args = suite.parse_args(["--preset", "gpu", "--device", device, "--out-dir", str(out)])
        args.steps = [suite.Step("platforms", "", "platforms", 60, report="seen.txt")]
        report, _ = suite.run(args)
        assert report["steps"]["platforms"]["status"] == "ok"
        seen[device] = (out / "seen.txt").read_text()
    assert seen == {"cpu": "cpu", "cuda": "unset"}


@pytest.mark.slow
def test_the_runbook_runs_at_smoke_test_sizes(tmp_path):
    """``python -m benchmarks.suite --preset gpu``, quick, on the CPU: what a lent GPU
    would run."""
    argv = ["--preset", "gpu", "--quick", "--device", "cpu", "--steps", "alone,trace"]
    cmd, env = harness.module_command("suite", *argv, "--out-dir", str(tmp_path))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "suite.json").read_text())
    assert report["complete"] and report["settings"]["preset"] == "gpu"
    assert [row["variant"] for row in report["alone"]["rows"]] == ["auto"] * 2  # ota, simota
    assert report["trace"]["assigner"] == "ota" and report["trace"]["ops_per_call"] > 0
    assert (tmp_path / "buckets.json").exists() and (tmp_path / "trace_ota.md").exists()
    assert proc.stdout.startswith(f"# Benchmark suite on {report['device']}")
    assert sys.executable in (tmp_path / "suite.log").read_text()
