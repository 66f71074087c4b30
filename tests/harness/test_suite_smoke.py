"""``benchmarks/suite.py``: each step a benchmark in its own process under a time limit, one
JSON and one markdown report with every step's; a broken step is reported as failed, a
step past its limit as timed out, and the other steps run."""

from __future__ import annotations

import importlib
import json
import shlex
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmarks import suite

HEADER = {"device", "device_slug", "jax_backend", "versions", "git_commit", "date", "command"}


def _sections(markdown: str) -> dict[str, str]:
    """The report's ``## `` sections by title."""
    parts = markdown.split("\n## ")
    return {part.split("\n", 1)[0]: part for part in parts[1:]}


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a killed process may stay a zombie until it is reaped)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_step_args(tmp_path):
    args = suite.parse_args(["--assign-args", "--assigners ota --repeats 3", "--workloads", "w"])
    assert [step.name for step in args.steps] == ["assign", "scaling", "train_step"]
    assign, _, train_step = args.steps
    argv = suite.step_args(args, assign, out=tmp_path, tmp=tmp_path)
    assert argv[argv.index("--workloads") + 1] == suite.WORKLOADS  # the preset's, then ...
    assert argv[-6:-2] == ["--assigners", "ota", "--repeats", "3"]  # ... later ones win
    assert argv[-8:-6] == ["--workloads", "w"] and "--device" in argv
    assert argv[-2:] == ["--out", str(tmp_path / "assign.json")]
    assert {"crowd500", "crowd1000", "yolox640", "fcos1024", "crowd100"} <= set(
        suite.WORKLOADS.split(",")
    )
    # The CPU suite's train step is the tiny FCOS of docs/performance.md.
    argv = suite.step_args(args, train_step, out=tmp_path, tmp=tmp_path)
    assert argv[:2] == ["--preset", "tiny"] and argv[-1] == str(tmp_path / "train_step.json")
    quick = suite.parse_args(["--quick", "--torch-budget-s", "0"])
    argv = suite.step_args(quick, quick.steps[0], out=tmp_path, tmp=tmp_path)
    assert argv[argv.index("--workloads") + 1] == suite.QUICK_WORKLOADS
    assert argv[0] == "--quick" and argv[-4:-2] == ["--torch-budget-s", "0.0"]
    assert suite.step_args(quick, quick.steps[2], out=tmp_path, tmp=tmp_path)[0] == "--quick"
    with pytest.raises(SystemExit):
        suite.parse_args(["--steps", "assign,nothing"])
    with pytest.raises(SystemExit):
        suite.parse_args(["--steps", "alone"])  # a step of the gpu preset


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.parametrize("preset", sorted(suite.PRESETS))
def test_every_step_gives_its_module_arguments_it_accepts(tmp_path, preset, quick):
    from benchmarks import bucket_ablation

    names = ",".join(step.name for step in suite.PRESETS[preset])
    argv = ["--preset", preset, "--steps", names, "--device", "cuda"]
    args = suite.parse_args([*argv, *(["--quick"] if quick else [])])
    assert [step.name for step in args.steps] == names.split(",")
    for step in args.steps:
        step_argv = suite.step_args(args, step, out=tmp_path, tmp=tmp_path / "t")
        assert not any("{" in arg for arg in step_argv), step_argv
        module = importlib.import_module(step.module)
        parsed = module.parse_args(step_argv)  # exits on an unknown or malformed argument
        assert Path(parsed.out) == tmp_path / step.report
        if module is bucket_ablation:
            variants = bucket_ablation.split_variants(parsed.variants)
            assert variants == ["auto"]


def test_a_broken_step_fails_a_slow_one_times_out_and_the_rest_run(tmp_path, monkeypatch):
    """A benchmark that exits with an error is reported as failed, one past its limit is
    ended with its children and reported as timed out (what it wrote kept), and the
    steps after them run; the report is then incomplete. A report left in the output
    folder by an earlier run is not taken for the failed step's."""
    modules = tmp_path / "modules"
    modules.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(modules))  # python -m slow_step, fine_step
    grandchild_pid = tmp_path / "grandchild.pid"
    (modules / "slow_step.py").write_text(
        textwrap.dedent(
            f"""
            import json, subprocess, sys, time
            from pathlib import Path
            out = Path(sys.argv[sys.argv.index("--out") + 1])
            out.write_text(json.dumps({{"partial": True}}))
            out.with_suffix(".md").write_text("what the slow step finished")
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            Path({str(grandchild_pid)!r}).write_text(str(child.pid))
            time.sleep(60)
            """
        )
    )
    (modules / "fine_step.py").write_text(
        textwrap.dedent(
            """
            import json, sys
            from pathlib import Path
            out = Path(sys.argv[sys.argv.index("--out") + 1])
            out.write_text(json.dumps({"rows": [1, 2]}))
            out.with_suffix(".md").write_text("| fine | table |")
            """
        )
    )
    out = tmp_path / "out"
    out.mkdir()
    (out / "scaling.json").write_text('{"stale": true}')  # an earlier run's
    args = suite.parse_args(["--quick", "--out-dir", str(out)])
    args.steps = [
        # A real benchmark, broken on purpose: an assigner that does not exist.
        suite.Step("broken", "Broken", "benchmarks.scaling", 120, report="scaling.json",
                   quick_args=("--quick", "--assigners", "no_such_assigner")),
        suite.Step("slow", "Slow", "slow_step", 5, quick_args=("two words",),
                   report="slow.json", quick_limit_s=5),
        suite.Step("fine", "Fine", "fine_step", 60, report="fine.json"),
    ]  # fmt: skip
    start = time.perf_counter()
    report, _ = suite.run(args)
    assert time.perf_counter() - start < 60
    assert json.loads((out / "suite.json").read_text()) == report
    assert report["complete"] is False
    steps = report["steps"]
    assert {name: entry["status"] for name, entry in steps.items()} == {
        "broken": "failed",
        "slow": "timed out",
        "fine": "ok",
    }
    assert steps["broken"]["exit"] not in (0, suite.TIMED_OUT)
    assert "--assigners must be among" in steps["broken"]["output_tail"]
    assert steps["slow"]["exit"] == suite.TIMED_OUT and steps["slow"]["seconds"] < 30
    assert "broken" not in report  # the stale scaling.json is not this run's
    assert report["slow"] == {"partial": True} and report["fine"] == {"rows": [1, 2]}
    assert set(report["seconds"]) == {"broken", "slow", "fine", "total"}
    markdown = (out / "suite.md").read_text()
    assert "(incomplete: broken failed, slow timed out)" in markdown.splitlines()[0]
    assert "| slow | timed out |" in markdown and "| fine | ok |" in markdown
    sections = _sections(markdown)
    assert "what the slow step finished" in sections["Slow (`python -m slow_step`)"]
    assert "| fine | table |" in sections["Fine (`python -m fine_step`)"]
    assert "--assigners must be among" in sections["Broken (`python -m benchmarks.scaling`)"]
    pid = int(grandchild_pid.read_text())
    for _ in range(50):  # the kill is asynchronous
        if not _running(pid):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the step's child outlived the step")
    # The log holds every step's command, quoted: pasted into a shell, the same command.
    commands = [line for line in (out / "suite.log").read_text().splitlines() if line[:2] == "$ "]
    assert len(commands) == 3
    logged = commands[1]
    expected = [sys.executable, "-m", "slow_step", "two words", "--out", str(out / "slow.json")]
    assert shlex.split(logged.removeprefix("$ ")) == expected


@pytest.mark.slow
@pytest.mark.torch
def test_suite_quick_assign_and_scaling(tmp_path, capsys):
    from ota_jax.assigners import ASSIGNERS

    # One of the quick workloads (every registered assigner compiles once per workload),
    # and a torch budget that leaves one image of two.
    budget = ["--torch-budget-s", "1e-6", "--assign-args", "--memory none --no-row-shift-check"]
    argv = ["--quick", "--steps", "assign,scaling", "--workloads", "tinycrowd", *budget]
    report = suite.main([*argv, "--out-dir", str(tmp_path)])
    assert json.loads((tmp_path / "suite.json").read_text()) == report
    # A benchmark that fails here fails this test: every step must succeed.
    statuses = {name: entry["status"] for name, entry in report["steps"].items()}
    assert statuses == {"assign": "ok", "scaling": "ok"}, report["steps"]
    assert HEADER <= set(report) and report["benchmark"] == "suite" and report["complete"]
    assert {"assign", "scaling"} <= set(report) and "train_step" not in report
    assert set(report["seconds"]) == {"assign", "scaling", "total"}
    rows = report["assign"]["results"]
    assert [(r["workload"], r["assigner"]) for r in rows] == [("tinycrowd", a) for a in ASSIGNERS]
    for row in rows:
        assert row["jax_ms"] > 0
        if row["torch_loop"]:
            assert row["torch_images"] == 1 and row["agreement"] >= 0.999, row
    assert {r["assigner"] for r in report["scaling"]["results"]} == {"ota", "simota"}
    assert report["assign"]["device_slug"] == report["device_slug"]

    markdown = (tmp_path / "suite.md").read_text()
    assert capsys.readouterr().out.strip() == markdown.strip()
    assert markdown.startswith(f"# Benchmark suite on {report['device']}\n")
    sections = _sections(markdown)
    assert [title.split(" (")[0] for title in sections] == [
        "Assignment, ota_jax vs PyTorch loops",
        "How the cost grows",
    ]
    assign_md, scaling_md = sections.values()
    for section in (assign_md, scaling_md):
        assert report["device"] in section.splitlines()[2]  # each table names the device
    table = [line for line in assign_md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(rows)  # header and rows
    assert "| tinycrowd | ota |" in assign_md and "1/2" in assign_md
    assert "| factor | batch |" in scaling_md


@pytest.mark.slow
def test_suite_quick_train_step(tmp_path):
    only_simota = ["--train-step-args", "--assigners simota"]
    report = suite.main(
        ["--quick", "--steps", "train_step", "--out-dir", str(tmp_path), *only_simota]
    )
    assert report["steps"]["train_step"]["status"] == "ok", report["steps"]
    assert set(report["seconds"]) == {"train_step", "total"}
    (row,) = report["train_step"]["results"]
    assert row["assigner"] == "simota" and row["step_ms"] > 0
    assert report["settings"]["step_args"]["train_step"] == [
        "--quick",
        "--assigners",
        "simota",
        "--out",
        str(tmp_path / "train_step.json"),
    ]
    sections = _sections((tmp_path / "suite.md").read_text())
    (section,) = sections.values()
    assert section.startswith("Assignment share of an FCOS train step")
    assert "| simota |" in section
