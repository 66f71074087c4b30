"""``benchmarks/suite.py --quick`` writes one JSON and one markdown report with every part."""

from __future__ import annotations

import json

import pytest

from benchmarks import suite

HEADER = {"device", "device_slug", "jax_backend", "versions", "git_commit", "date", "command"}


def _sections(markdown: str) -> dict[str, str]:
    """The report's ``## `` sections by title."""
    parts = markdown.split("\n## ")
    return {part.split("\n", 1)[0]: part for part in parts[1:]}


def test_step_args():
    args = suite.parse_args(["--assign-args", "--assigners ota --repeats 3"])
    assign = suite.step_args(args, "assign", cpu=True)
    assert assign[assign.index("--workloads") + 1] == ",".join(suite.WORKLOADS)
    assert assign[-4:] == ["--assigners", "ota", "--repeats", "3"]
    assert {"crowd500", "crowd1000", "yolox640", "fcos1024", "crowd100"} <= set(suite.WORKLOADS)
    # The train step's GPU default on a GPU, the tiny CPU setting of docs/performance.md on a CPU.
    assert suite.step_args(args, "train_step", cpu=False) == []
    assert suite.step_args(args, "train_step", cpu=True) == list(suite.TRAIN_STEP_CPU)
    quick = suite.parse_args(["--quick"])
    assert quick.workloads == ",".join(suite.QUICK_WORKLOADS)
    assert suite.step_args(quick, "train_step", cpu=True) == ["--quick"]
    with pytest.raises(SystemExit):
        suite.parse_args(["--steps", "assign,nothing"])


@pytest.mark.torch
def test_suite_quick_assign_and_scaling(tmp_path, capsys):
    from ota_jax.assigners import ASSIGNERS

    # One of the quick workloads (every registered assigner compiles once per workload),
    # and a torch budget that leaves one image of two.
    budget = ["--torch-budget-s", "1e-6", "--assign-args", "--memory none --no-row-shift-check"]
    argv = ["--quick", "--steps", "assign,scaling", "--workloads", "tinycrowd", *budget]
    report = suite.main([*argv, "--out-dir", str(tmp_path)])
    assert json.loads((tmp_path / "suite.json").read_text()) == report
    assert HEADER <= set(report) and report["benchmark"] == "suite" and report["complete"]
    assert {"assign", "scaling"} <= set(report) and "train_step" not in report
    assert set(report["seconds"]) == {"assign tinycrowd", "scaling", "total"}
    rows = report["assign"]["results"]
    assert [(r["workload"], r["assigner"]) for r in rows] == [("tinycrowd", a) for a in ASSIGNERS]
    for row in rows:
        assert row["jax_ms"] > 0
        if row["torch_loop"]:
            assert row["torch_images"] == 1 and row["agreement"] >= 0.999, row
    assert {r["assigner"] for r in report["scaling"]["results"]} == {"ota", "simota"}

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


def test_suite_keeps_the_finished_steps_of_a_run_that_dies(tmp_path, monkeypatch):
    def dies(args):
        raise MemoryError("the machine ran out of memory")

    monkeypatch.setattr(suite.scaling, "run", dies)
    assign = ["--assign-args", "--assigners ota --memory none --skip-torch"]
    argv = ["--quick", "--steps", "assign,scaling", "--workloads", "tiny320", *assign]
    with pytest.raises(MemoryError):
        suite.main([*argv, "--out-dir", str(tmp_path)])
    report = json.loads((tmp_path / "suite.json").read_text())
    assert report["complete"] is False and "scaling" not in report
    assert set(report["seconds"]) == {"assign tiny320", "total"}
    assert [row["assigner"] for row in report["assign"]["results"]] == ["ota"]
    markdown = (tmp_path / "suite.md").read_text()
    assert "(incomplete: the steps run so far)" in markdown.splitlines()[0]
    assert "| tiny320 | ota |" in markdown


@pytest.mark.slow
def test_suite_quick_train_step(tmp_path):
    only_simota = ["--train-step-args", "--assigners simota"]
    report = suite.main(
        ["--quick", "--steps", "train_step", "--out-dir", str(tmp_path), *only_simota]
    )
    assert set(report["seconds"]) == {"train_step", "total"}
    (row,) = report["train_step"]["results"]
    assert row["assigner"] == "simota" and row["step_ms"] > 0
    assert report["settings"]["step_args"]["train_step"] == ["--quick", "--assigners", "simota"]
    sections = _sections((tmp_path / "suite.md").read_text())
    (section,) = sections.values()
    assert section.startswith("Assignment share of an FCOS train step")
    assert "| simota |" in section
