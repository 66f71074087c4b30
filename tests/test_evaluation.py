"""COCO evaluation: perfect, hand-computed, crowd, empty, and against a direct pycocotools run."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ota_jax.data.ground_truth import ImageGroundTruth
from ota_jax.evaluation import (
    METRIC_NAMES,
    CocoEvaluator,
    boxes_to_original,
    write_metrics,
)


def _image(image_id, boxes, labels, *, crowd=None, size=(200, 300)) -> ImageGroundTruth:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    crowd = np.zeros(len(boxes), bool) if crowd is None else np.asarray(crowd, bool)
    height, width = size
    return ImageGroundTruth(
        image_id, height, width, boxes, np.asarray(labels, np.int32), areas, crowd
    )


def _add_one_image(evaluator, image_id, boxes, scores, labels) -> None:
    evaluator.add_detections(
        np.array([image_id]),
        np.asarray(boxes, np.float32).reshape(1, -1, 4),
        np.asarray(scores, np.float32)[None],
        np.asarray(labels, np.int32)[None],
    )


# Small (< 32^2), medium and large (> 96^2) objects, two categories, three images.
GROUND_TRUTH = [
    _image(1, [[10, 10, 30, 30], [50, 40, 120, 100]], [0, 1]),
    _image(2, [[0, 0, 150, 120], [200, 150, 210, 170]], [1, 1]),
    _image(3, [[20, 30, 70, 90]], [0]),
]


def test_perfect_detections_score_one():
    evaluator = CocoEvaluator(GROUND_TRUTH, category_ids=[3, 17], class_names=["a", "b"])
    for image in GROUND_TRUTH:
        scores = np.linspace(0.9, 0.5, len(image.labels))
        _add_one_image(evaluator, image.image_id, image.boxes, scores, image.labels)
    metrics = evaluator.evaluate()
    assert list(metrics) == list(METRIC_NAMES)
    assert metrics == pytest.approx(dict.fromkeys(METRIC_NAMES, 1.0))


def test_hand_computed_case():
    # Two 40x40 (medium) ground truths. Detections: one at IoU 0.72 with the
    # first (score 0.9), one on empty background (score 0.8); the second gt is
    # missed. Ranked: (TP, recall 0.5, precision 1), (FP, recall 0.5, 0.5).
    # COCO's 101-point interpolated precision is 1 at recalls 0, 0.01, ..., 0.50
    # and 0 above: 51/101 at IoU thresholds 0.50..0.70 (5 of 10), 0 at 0.75..0.95.
    ground_truth = [_image(7, [[10, 10, 50, 50], [100, 100, 140, 140]], [0, 0])]
    evaluator = CocoEvaluator(ground_truth, category_ids=[1])
    detections = [[10, 10, 50, 10 + 0.72 * 40], [150, 10, 190, 50]]
    _add_one_image(evaluator, 7, detections, [0.9, 0.8], [0, 0])
    metrics = evaluator.evaluate()
    expected = {
        "AP": 0.5 * 51 / 101,
        "AP50": 51 / 101,
        "AP75": 0.0,
        "APs": 0.0,  # No small ground truth: undefined in COCO (-1), reported as 0.
        "APm": 0.5 * 51 / 101,
        "APl": 0.0,
    }
    assert metrics == pytest.approx(expected, abs=1e-9)


def test_detections_on_crowd_regions_are_not_false_positives():
    ground_truth = [_image(1, [[10, 10, 60, 60], [100, 20, 250, 180]], [0, 0], crowd=[0, 1])]
    evaluator = CocoEvaluator(ground_truth, category_ids=[1])
    # The highest score sits inside the crowd region; it must not cost precision.
    _add_one_image(evaluator, 1, [[120, 40, 160, 90], [10, 10, 60, 60]], [0.95, 0.9], [0, 0])
    assert evaluator.evaluate()["AP"] == pytest.approx(1.0)


def test_no_detections_give_zero():
    evaluator = CocoEvaluator(GROUND_TRUTH, category_ids=[1, 2])
    assert evaluator.evaluate() == dict.fromkeys(METRIC_NAMES, 0.0)
    # Masked-out detections and padding images (id -1) are not detections either.
    evaluator.add_detections(
        np.array([1, -1]),
        np.ones((2, 3, 4), np.float32),
        np.ones((2, 3), np.float32),
        np.zeros((2, 3), np.int32),
        mask=np.array([[False] * 3, [True] * 3]),
    )
    assert evaluator.evaluate() == dict.fromkeys(METRIC_NAMES, 0.0)


def test_matches_a_direct_pycocotools_run(tmp_path):
    rng = np.random.default_rng(0)
    ground_truth, detections = [], []
    for image_id in range(1, 9):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 250, (n, 2))
        wh = rng.uniform(5, 150, (n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(0, 3, n)
        ground_truth.append(_image(image_id, boxes, labels, crowd=rng.random(n) < 0.15))
        noisy = np.concatenate([boxes + rng.normal(0, 6, boxes.shape), rng.uniform(0, 300, (3, 4))])
        noisy[:, 2:] = np.maximum(noisy[:, 2:], noisy[:, :2] + 1)
        scores = rng.uniform(0, 1, len(noisy))
        det_labels = np.concatenate([labels, rng.integers(0, 3, 3)])
        detections.append((image_id, noisy, scores, det_labels))
    category_ids = [5, 9, 11]

    evaluator = CocoEvaluator(ground_truth, category_ids)
    for image_id, boxes, scores, labels in detections:
        _add_one_image(evaluator, image_id, boxes, scores, labels)
    ours = evaluator.evaluate()

    # The same data through pycocotools' documented file-based route.
    annotations = []
    for image in ground_truth:
        for (x1, y1, x2, y2), label, area, crowd in zip(
            image.boxes, image.labels, image.areas, image.is_crowd, strict=True
        ):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image.image_id,
                    "category_id": category_ids[label],
                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                    "area": float(area),
                    "iscrowd": int(crowd),
                }
            )
    gt_json = {
        "images": [{"id": i.image_id, "height": i.height, "width": i.width} for i in ground_truth],
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in category_ids],
    }
    results = [
        {
            "image_id": image_id,
            "category_id": category_ids[label],
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(score),
        }
        for image_id, boxes, scores, labels in detections
        for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels, strict=True)
    ]
    (tmp_path / "gt.json").write_text(json.dumps(gt_json))
    (tmp_path / "results.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(str(tmp_path / "results.json")), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    reference = {
        n: max(float(v), 0.0) for n, v in zip(METRIC_NAMES, coco_eval.stats[:6], strict=True)
    }
    assert 0.0 < ours["AP"] < 1.0
    assert ours == pytest.approx(reference, abs=1e-6)


def test_pycocotools_prints_nothing(capsys):
    evaluator = CocoEvaluator(GROUND_TRUTH, category_ids=[1, 2])
    _add_one_image(evaluator, 1, GROUND_TRUTH[0].boxes, [0.9, 0.8], GROUND_TRUTH[0].labels)
    evaluator.evaluate()
    assert capsys.readouterr().out == ""


def test_rejects_unknown_images_and_labels():
    evaluator = CocoEvaluator(GROUND_TRUTH, category_ids=[1, 2])
    with pytest.raises(ValueError, match="not in the ground truth"):
        _add_one_image(evaluator, 99, [[0, 0, 1, 1]], [0.5], [0])
    with pytest.raises(ValueError, match="Labels"):
        _add_one_image(evaluator, 1, [[0, 0, 1, 1]], [0.5], [2])


def test_boxes_to_original():
    boxes = np.array([[[15.0, 30.0, 45.0, 60.0], [0.0, 0.0, 500.0, 500.0]]])
    scale = np.array([[1.5, 0.5]])  # (x, y)
    orig_size = np.array([[100, 40]])  # (height, width)
    np.testing.assert_allclose(
        boxes_to_original(boxes, scale, orig_size),
        [[[10.0, 60.0, 30.0, 100.0], [0.0, 0.0, 40.0, 100.0]]],
    )


def test_add_batch_maps_resized_boxes_back():
    evaluator = CocoEvaluator(GROUND_TRUTH[:1], category_ids=[1, 2])
    batch = {
        "image_id": np.array([1, 0]),
        "valid": np.array([True, False]),
        "scale": np.array([[0.5, 0.25], [1.0, 1.0]], np.float32),
        "orig_size": np.array([[200, 300], [1, 1]], np.int32),
    }
    boxes = GROUND_TRUTH[0].boxes * np.array([0.5, 0.25, 0.5, 0.25], np.float32)
    boxes = np.stack([boxes, np.zeros_like(boxes)])
    evaluator.add_batch(batch, boxes, np.ones((2, 2)), np.stack([GROUND_TRUTH[0].labels] * 2))
    metrics = evaluator.evaluate()
    assert metrics["AP"] == pytest.approx(1.0)


def test_write_metrics(tmp_path):
    path = write_metrics({"AP": 0.25, "AP50": np.float32(0.5)}, tmp_path / "run")
    assert path == str(tmp_path / "run" / "eval.json")
    assert json.loads((tmp_path / "run" / "eval.json").read_text()) == {"AP": 0.25, "AP50": 0.5}


def test_importing_the_library_detector_and_evaluation_does_not_import_tensorflow():
    """TensorFlow is the input pipeline's alone (layer 3): not the detector's (layer 2)."""
    code = (
        "import sys, ota_jax, ota_jax.detector, ota_jax.evaluation, ota_jax.data;"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
