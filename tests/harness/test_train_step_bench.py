"""``benchmarks/train_step_bench.py --quick`` runs and writes a complete JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import train_step_bench


def test_make_batch_deterministic_and_valid():
    first = train_step_bench.make_batch(3, 64, 96, 10, 5, seed=1)
    again = train_step_bench.make_batch(3, 64, 96, 10, 5, seed=1)
    for key, value in first.items():
        np.testing.assert_array_equal(value, again[key])
    boxes, mask = first["gt_boxes"], first["gt_mask"]
    assert first["image"].shape == (3, 64, 96, 3) and boxes.shape == (3, 10, 4)
    assert np.all((mask.sum(axis=1) >= 2) & (mask.sum(axis=1) <= 8))
    real = boxes[mask]
    assert np.all(real[:, 2:] > real[:, :2])
    assert np.all(real >= 0)
    assert np.all(real[:, [0, 2]] <= 96) and np.all(real[:, [1, 3]] <= 64)
    assert np.all(boxes[~mask] == 0)
    assert np.all((first["gt_labels"] >= 0) & (first["gt_labels"] < 5))


@pytest.mark.slow
def test_train_step_bench_quick_writes_complete_json(tmp_path, capsys):
    out = tmp_path / "quick.json"
    train_step_bench.main(["--quick", "--dtype", "bfloat16", "--out", str(out)])
    assert "| ota |" in capsys.readouterr().out
    report = json.loads(out.read_text())
    for key in ("device", "device_slug", "versions", "settings", "results", "date", "git_commit"):
        assert key in report
    assert report["versions"]["jax"]
    settings = report["settings"]
    assert settings["quick"] and settings["preset"] == "tiny"
    assert settings["dtype"] == "bfloat16" and "(bfloat16)" in (out.with_suffix(".md")).read_text()
    assert settings["image_size"] == [64, 64] and settings["batch"] == 2
    assert settings["repeats"] == 2 and settings["num_anchors"] > 0
    assert [row["assigner"] for row in report["results"]] == ["ota", "simota"]
    for row in report["results"]:
        for key in ("step_ms", "fixed_step_ms", "assign_ms"):
            assert np.isfinite(row[key]) and row[key] > 0
        for key in ("share_step_minus_fixed", "share_assign_alone"):
            assert 0.0 <= row[key] <= 1.0
        for part in ("step", "fixed_step", "assign"):
            assert len(row[part]["times_ms"]) == 2 and row[part]["warmup_s"] > 0
        assert row["num_gt"] > 0 and row["num_fg"] > 0
