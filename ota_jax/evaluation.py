"""COCO box evaluation (pycocotools) of detections against a dataset's ground truth.

Usage::

    evaluator = CocoEvaluator.from_dataset("ota_shapes", data_dir=data_dir)
    for batch in make_iterator("ota_shapes", data_dir=data_dir, train=False, ...):
        boxes, scores, labels, mask = detect(batch)  # resized-image pixels
        evaluator.add_batch(batch, boxes, scores, labels, mask)
    metrics = evaluator.evaluate()  # {"AP": ..., "AP50": ..., ...}
    write_metrics(metrics, workdir)

pycocotools prints its progress and summary; here they go to this module's
logger at DEBUG level instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

try:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
except ImportError as error:
    raise ImportError(
        "ota_jax.evaluation needs pycocotools, which `pip install ota-jax` leaves out: "
        'pip install "ota-jax[train]"'
    ) from error

from ota_jax.data.ground_truth import ImageGroundTruth

__all__ = [
    "METRIC_NAMES",
    "CocoEvaluator",
    "boxes_to_original",
    "write_metrics",
]

logger = logging.getLogger(__name__)

# The first six entries of ``COCOeval.stats``, in order.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@contextlib.contextmanager
def _pycocotools_output_to_log():
    """Captures pycocotools' prints and logs them at DEBUG level."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        if buffer.getvalue().strip():
            logger.debug("pycocotools:\n%s", buffer.getvalue().rstrip())


def boxes_to_original(boxes: np.ndarray, scale: np.ndarray, orig_size: np.ndarray) -> np.ndarray:
    """Boxes in resized-image pixels back to original pixels, clipped to the image.

    Args:
      boxes: ``[B, K, 4]`` xyxy in the pipeline's resized image.
      scale: ``[B, 2]`` the batch's ``(x_scale, y_scale)``.
      orig_size: ``[B, 2]`` the batch's original ``(height, width)``.

    Returns:
      ``[B, K, 4]`` float32 xyxy original pixels.
    """
    scale_xyxy = np.tile(np.asarray(scale, np.float32), 2)[:, None, :]
    height, width = np.asarray(orig_size, np.float32).T
    limit = np.stack([width, height, width, height], axis=-1)[:, None, :]
    return np.clip(np.asarray(boxes, np.float32) / scale_xyxy, 0.0, limit)


class CocoEvaluator:
    """Accumulates detections and scores them with ``COCOeval`` (bbox).

    Labels are the library's contiguous ``0..C-1``; ``category_ids[label]`` is
    what pycocotools sees.
    """

    def __init__(
        self,
        ground_truth: Iterable[ImageGroundTruth],
        category_ids: Sequence[int],
        class_names: Sequence[str] | None = None,
    ) -> None:
        """Builds the in-memory COCO ground truth.

        Args:
          ground_truth: annotations of every evaluated image (images without
            detections count as misses).
          category_ids: ``[C]`` COCO category id of each contiguous label.
          class_names: ``[C]`` names (only for display); default ``str(id)``.
        """
        self._category_ids = np.asarray(category_ids, np.int64)
        names = class_names or [str(i) for i in category_ids]
        images, annotations = [], []
        for image in ground_truth:
            images.append({"id": image.image_id, "height": image.height, "width": image.width})
            for box, label, area, crowd in zip(
                np.asarray(image.boxes, np.float64).reshape(-1, 4),
                image.labels,
                image.areas,
                image.is_crowd,
                strict=True,
            ):
                x1, y1, x2, y2 = (float(v) for v in box)
                annotations.append(
                    {
                        # COCOeval treats id 0 as "unmatched", so ids start at 1.
                        "id": len(annotations) + 1,
                        "image_id": image.image_id,
                        "category_id": int(self._category_ids[label]),
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": float(area),
                        "iscrowd": int(crowd),
                    }
                )
        categories = [
            {"id": int(i), "name": str(n)} for i, n in zip(category_ids, names, strict=True)
        ]
        self._coco_gt = COCO()
        self._coco_gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        with _pycocotools_output_to_log():
            self._coco_gt.createIndex()
        self._image_ids = {image["id"] for image in images}
        self._detections: list[np.ndarray] = []

    @classmethod
    def from_dataset(
        cls, name: str, split: str | None = None, *, data_dir: str | None = None
    ) -> CocoEvaluator:
        """An evaluator for ``split`` of a dataset of ``ota_jax.data.registry``."""
        from ota_jax.data import ground_truth, registry

        spec, _ = registry.resolve(name)
        records = ground_truth.load_ground_truth(name, split, data_dir=data_dir)
        return cls(records, spec.category_ids, spec.class_names)

    def reset(self) -> None:
        """Forgets the detections added so far (the ground truth stays)."""
        self._detections = []

    def add_detections(
        self,
        image_ids: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        mask: np.ndarray | None = None,
    ) -> None:
        """Adds detections in original image pixels.

        Args:
          image_ids: ``[B]`` image ids; negative ids (padding images) are skipped.
          boxes: ``[B, K, 4]`` xyxy original pixels.
          scores: ``[B, K]`` confidences.
          labels: ``[B, K]`` contiguous labels ``0..C-1``.
          mask: ``[B, K]`` bool, which detections are real (default: all).

        Raises:
          ValueError: an image id not in the ground truth, or a label out of range.
        """
        image_ids = np.asarray(image_ids, np.int64)
        boxes = np.asarray(boxes, np.float64)
        scores = np.asarray(scores, np.float64)
        labels = np.asarray(labels, np.int64)
        keep = np.ones(scores.shape, bool) if mask is None else np.asarray(mask, bool).copy()
        keep &= (image_ids >= 0)[:, None]
        if not keep.any():
            return
        unknown = set(image_ids[keep.any(axis=1)].tolist()) - self._image_ids
        if unknown:
            raise ValueError(f"Detections for image ids not in the ground truth: {sorted(unknown)}")
        labels = labels[keep]
        if labels.min() < 0 or labels.max() >= len(self._category_ids):
            raise ValueError(f"Labels must be in [0, {len(self._category_ids)}).")
        x1, y1, x2, y2 = boxes[keep].T
        rows = np.stack(
            [
                np.broadcast_to(image_ids[:, None], keep.shape)[keep],
                x1,
                y1,
                x2 - x1,
                y2 - y1,
                scores[keep],
                self._category_ids[labels],
            ],
            axis=-1,
        )
        self._detections.append(rows)

    def add_batch(
        self,
        batch: Mapping[str, np.ndarray],
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        mask: np.ndarray | None = None,
    ) -> None:
        """Adds detections made on a pipeline batch, in its resized-image pixels.

        Args:
          batch: the pipeline batch (uses ``image_id``, ``scale``, ``orig_size``, ``valid``).
          boxes: ``[B, K, 4]`` xyxy pixels of the batch's (resized) images.
          scores: ``[B, K]`` confidences.
          labels: ``[B, K]`` contiguous labels.
          mask: ``[B, K]`` bool, which detections are real (default: all).
        """
        image_ids = np.where(batch["valid"], batch["image_id"], -1)
        original = boxes_to_original(boxes, batch["scale"], batch["orig_size"])
        self.add_detections(image_ids, original, scores, labels, mask)

    def evaluate(
        self, size_ranges: Mapping[str, tuple[float, float]] | None = None
    ) -> dict[str, float]:
        """COCO box metrics of the detections added so far.

        Args:
          size_ranges: optional extra object-size buckets, ``{label: (low, high)}`` in
            ``sqrt(area)`` pixels (COCOeval's ``areaRng`` is their square); each adds
            ``AP_<label>`` and ``AP50_<label>`` (100 detections per image, as ``AP``),
            NaN for a bucket without ground truth.

        Returns:
          ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` floats in ``[0, 1]``, and the
          buckets' metrics. A metric COCO cannot define (no ground truth of that
          size) is 0, and so is everything when there are no detections.
        """
        size_ranges = dict(size_ranges or {})
        names = list(METRIC_NAMES)
        for label in size_ranges:
            names += [f"AP_{label}", f"AP50_{label}"]
        detections = np.concatenate(self._detections) if self._detections else np.zeros((0, 7))
        if len(detections) == 0 or not self._image_ids:
            logger.info("No detections to evaluate; all metrics are 0.")
            return dict.fromkeys(names, 0.0)
        with _pycocotools_output_to_log():
            coco_dt = self._coco_gt.loadRes(detections)
            coco_eval = COCOeval(self._coco_gt, coco_dt, iouType="bbox")
            # Appended after COCO's all/small/medium/large, which summarize() reads.
            first_size = len(coco_eval.params.areaRng)
            for label, (low, high) in size_ranges.items():
                coco_eval.params.areaRng.append([float(low) ** 2, float(high) ** 2])
                coco_eval.params.areaRngLbl.append(label)
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        # COCOeval reports -1 for undefined metrics; report those as 0.
        metrics = {
            name: float(max(value, 0.0))
            for name, value in zip(METRIC_NAMES, coco_eval.stats[:6], strict=True)
        }
        # precision: [IoU thresholds, recall points, classes, area ranges, max dets].
        precision = coco_eval.eval["precision"][..., -1]
        for index, label in enumerate(size_ranges, start=first_size):
            for name, p in (
                (f"AP_{label}", precision[..., index]),
                (f"AP50_{label}", precision[0, ..., index]),
            ):
                defined = p[p > -1]
                metrics[name] = float(defined.mean()) if defined.size else float("nan")
        return metrics


def write_metrics(metrics: Mapping[str, float], workdir: str | os.PathLike) -> str:
    """Writes ``metrics`` as JSON to ``<workdir>/eval.json``; returns the path.

    Local paths only need the standard library; ``gs://`` and other URLs go
    through ``tf.io.gfile``.
    """
    workdir = os.fspath(workdir)
    text = json.dumps({key: float(value) for key, value in metrics.items()}, indent=2)
    path = os.path.join(workdir, "eval.json")
    if "://" in workdir:
        import tensorflow as tf

        tf.io.gfile.makedirs(workdir)
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text + "\n")
    else:
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w") as f:
            f.write(text + "\n")
    return path
