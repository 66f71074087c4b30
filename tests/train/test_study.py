"""``ota-study`` end to end on the smoke config: runs, report, resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from ota_train import study

ASSIGNERS = ("ota", "max_iou")
SEEDS = (0, 1)


def _command(workdir, data_dir, cache) -> list[str]:
    command = shutil.which("ota-study")
    prefix = [command] if command else [sys.executable, "-m", "ota_train.study"]
    return [
        *prefix,
        "--config=smoke",
        f"--workdir={workdir}",
        "--datasets=ota_shapes/tiny",
        f"--assigners={','.join(ASSIGNERS)}",
        f"--seeds={','.join(map(str, SEEDS))}",
        "--config.train.steps=4",
        "--config.train.eval_every=2",
        f"--config.dataset.data_dir={data_dir}",
        f"--compilation_cache={cache}",
    ]


def _run(workdir, data_dir, cache) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        _command(workdir, data_dir, cache), capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_study_trains_every_setting_writes_the_report_and_resumes(tmp_path):
    workdir, data_dir, cache = tmp_path / "study", tmp_path / "tfds", tmp_path / "jax_cache"
    _run(workdir, data_dir, cache)
    assert any(cache.iterdir()), "--compilation_cache: nothing cached"

    results = json.loads((workdir / "study.json").read_text())
    assert {(r["assigner"], r["seed"]) for r in results} == {
        (a, s) for a in ASSIGNERS for s in SEEDS
    }
    for r in results:
        run_dir = study.Run(r["dataset"], r["assigner"], r["seed"]).workdir(str(workdir))
        assert os.path.exists(os.path.join(run_dir, "eval.json"))
        assert 0.0 <= r["AP"] <= 1.0 and r["pos_per_gt"] > 0 and r["assign_ms"] > 0
        saved = json.loads((tmp_path / run_dir / "config.json").read_text())
        assert (saved["loss"]["assigner"], saved["seed"]) == (r["assigner"], r["seed"])
    report = (workdir / "study.md").read_text()
    assert "ota-study --config=smoke" in report
    for assigner in ASSIGNERS:
        assert f"| {assigner} | " in report
    assert (workdir / "study.png").stat().st_size > 1000
    # By object size: AP, AP50 and positives / gt per bucket, and time per step.
    labels = [*study.SIZE_BUCKETS, "S", "M", "L"]
    for r in results:
        assert r["step_ms"] > 0
        for label in labels:
            for key in (f"AP_{label}", f"AP50_{label}"):  # NaN: no gt of that size.
                assert np.isnan(r[key]) or 0.0 <= r[key] <= 1.0
            assert (r[f"num_gt_{label}"] == 0) == np.isnan(r[f"pos_per_gt_{label}"])
        assert sum(r[f"num_gt_{label}"] for label in study.SIZE_BUCKETS) > 0
    for title in ("| AP | ", "| AP50 | ", "| positives / gt | "):
        assert title + " | ".join(labels) + " |" in report
    assert "ms / training step" in report
    # Learning curves: every run's AP at each evaluation, and the ranking at each.
    for r in results:
        assert [step for step, _ in r["curve"]] == [2, 4]
        assert r["curve"][-1][1] == pytest.approx(r["AP"])
    assert "| assigner | step 2 | step 4 |" in report
    assert report.count("| ranking | ") == 1

    # A rerun reads the finished runs back instead of training them again.
    stamps = {p: p.stat().st_mtime_ns for p in workdir.rglob(study.RESULT_FILE)}
    assert len(stamps) == len(ASSIGNERS) * len(SEEDS)
    _run(workdir, data_dir, cache)
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob(study.RESULT_FILE)} == stamps
    assert json.loads((workdir / "study.json").read_text()) == results


def test_summary_is_mean_and_sample_std_over_seeds():
    rng = np.random.default_rng(0)
    keys = [key for key, _, _ in study.COLUMNS]
    results = [
        {
            "dataset": "d",
            "assigner": a,
            "seed": s,
            **dict(zip(keys, rng.uniform(size=len(keys)), strict=True)),
        }
        for a in ("ota", "atss")
        for s in range(3)
    ]
    table = study.summarise(results).splitlines()
    row = next(line for line in table if line.startswith("| atss |"))
    values = [r["AP"] for r in results if r["assigner"] == "atss"]
    assert f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" == row.split(" | ")[1]
    assert len([line for line in table if line.startswith("| ")]) == 3  # header + 2 rows


def test_evaluator_scores_size_buckets():
    from ota_jax.data.ground_truth import ImageGroundTruth
    from ota_jax.evaluation import CocoEvaluator

    sides = np.array([8.0, 14.0, 20.0, 40.0])  # One gt in <12, 12-16, 16-24 and 32+.
    boxes = np.stack([sides, sides, 2 * sides, 2 * sides], axis=-1)
    image = ImageGroundTruth(
        image_id=1,
        height=128,
        width=128,
        boxes=boxes,
        labels=np.zeros(4, np.int64),
        areas=sides**2,
        is_crowd=np.zeros(4, bool),
    )
    evaluator = CocoEvaluator([image], category_ids=[1])
    # Exact boxes for the three smaller gts, a miss for the 40-pixel one.
    evaluator.add_detections(
        np.array([1]), boxes[None, :3], np.ones((1, 3)), np.zeros((1, 3), np.int64)
    )
    metrics = evaluator.evaluate(study.size_ranges("ota_shapes/tiny_objects"))
    for label in ("<12", "12-16", "16-24"):
        assert metrics[f"AP_{label}"] == pytest.approx(1.0)
    assert metrics["AP50_32+"] == 0.0  # Missed.
    assert np.isnan(metrics["AP_24-32"]) and np.isnan(metrics["AP50_24-32"])  # No gts.
    assert 0.0 < metrics["AP"] < 1.0


def test_learning_curve_table_ranks_the_assigners_at_each_evaluation():
    curves = {"ota": [(10, 0.1), (20, 0.5)], "atss": [(10, 0.2), (20, 0.4)]}
    results = [
        {
            "dataset": "d",
            "assigner": a,
            "seed": s,
            "curve": [(step, ap + s / 100) for step, ap in c],
        }
        | {key: 0.5 for key, _, _ in study.COLUMNS}
        for a, c in curves.items()
        for s in (0, 2)
    ]
    table = study.summarise(results)
    assert "| ota | 0.110 | 0.510 |" in table  # The mean over seeds at each step.
    assert "| ranking | atss > ota | ota > atss |" in table


def test_each_shapes_variant_trains_at_its_own_size_with_room_for_its_objects():
    from ota_jax.data import shapes

    settings = study.dataset_settings("ota_shapes/coco_like")
    assert settings == {
        "dataset.image_size": (384, 384),
        "dataset.max_gt": 16,
        "model.overrides.strides": (8, 16, 32, 64, 128),
    }
    crowd = study.dataset_settings("ota_shapes/crowd")
    assert crowd["dataset.image_size"] == (256, 256)
    assert crowd["dataset.max_gt"] >= shapes.OtaShapes.builder_configs["crowd"].max_objects
    assert study.dataset_settings("voc/2007") == {}
    assert study.coco_size_ranges("voc/2007")["M"] == (32.0, 96.0)
    assert study.coco_size_ranges("ota_shapes/crowd")["M"] == shapes.COCO_STRIDE_LIMITS


def test_each_run_trains_with_its_datasets_settings():
    from ota_train.configs import study as study_config

    config = study.run_config(
        study_config.get_config(), study.Run("ota_shapes/coco_like", "atss", 2)
    )
    assert (config.dataset.name, config.loss.assigner, config.seed) == (
        "ota_shapes/coco_like",
        "atss",
        2,
    )
    for path, value in study.dataset_settings("ota_shapes/coco_like").items():
        node = config
        for key in path.split("."):
            node = node[key]
        assert node == value, path
