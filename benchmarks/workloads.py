"""Deterministic synthetic workloads for the assignment benchmark.

A workload is one training batch as an assigner sees it: anchor points and
strides of an FPN, padded ground truth (COCO-like counts and sizes) and random
but plausible head outputs (decoded boxes, class logits, objectness logits).
Everything is NumPy; ``Workload.to_torch`` and ``Workload.to_jax`` convert at
the edges. The same name, batch size and seed always give the same arrays.

Head outputs are drawn around the ground truth the way a half-trained detector
looks: an anchor near a gt (inside its box, or a few strides from its centre)
predicts that gt's box with noise that grows with the distance, and a class
logit for that gt's class (and an objectness logit) that is high near the
centre and fades outward. Every other logit sits near the focal-loss prior
``log(0.01 / 0.99) = -4.6``; far anchors predict a box of a few strides around
themselves.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

import numpy as np

from ota_jax.anchors import anchor_points

__all__ = ["QUICK_WORKLOADS", "WORKLOADS", "Workload", "WorkloadSpec", "make_workload"]


@dataclasses.dataclass(frozen=True)
class WorkloadSpec:
    """How to draw one batch.

    Attributes:
      name: the workload's name (also seeds its random generator).
      image_size: ``(height, width)`` of the network input in pixels.
      strides: FPN strides, finest first.
      max_gt: gts are padded to this many per image.
      num_gt: a fixed gt count per image, or ``None`` for COCO-like counts.
      mean_gt: mean gt count per image when ``num_gt`` is ``None``.
      median_box: median ``sqrt(area)`` of a gt box in pixels.
      num_classes: number of classes ``C``.
    """

    name: str
    image_size: tuple[int, int]
    strides: tuple[int, ...]
    max_gt: int = 100
    num_gt: int | None = None
    mean_gt: float = 7.3
    median_box: float = 40.0
    num_classes: int = 80


WORKLOADS: dict[str, WorkloadSpec] = {
    spec.name: spec
    for spec in (
        # YOLOX at 640: strides 8/16/32, 8400 points, COCO-like gts.
        WorkloadSpec("yolox640", (640, 640), (8, 16, 32)),
        # FCOS at about 800x1333 (1024x1024 here): strides 8..128, 21824 points.
        WorkloadSpec("fcos1024", (1024, 1024), (8, 16, 32, 64, 128), median_box=64.0),
        # Crowded scenes at 640: a fixed number of smaller gts in every image.
        WorkloadSpec("crowd100", (640, 640), (8, 16, 32), num_gt=100, median_box=32.0),
        WorkloadSpec("crowd500", (640, 640), (8, 16, 32), max_gt=500, num_gt=500, median_box=24.0),
        WorkloadSpec(
            "crowd1000", (640, 640), (8, 16, 32), max_gt=1000, num_gt=1000, median_box=20.0
        ),
        # Small workloads for smoke tests (seconds on a CPU, loops included).
        WorkloadSpec("tiny320", (320, 320), (8, 16, 32), max_gt=16, mean_gt=6.0, median_box=32.0),
        WorkloadSpec("tinycrowd", (320, 320), (8, 16, 32), max_gt=16, num_gt=12, median_box=24.0),
    )
}

# The three workloads of BENCHMARKS.md, and the ones ``--quick`` runs.
DEFAULT_WORKLOADS: tuple[str, ...] = ("yolox640", "fcos1024", "crowd100")
QUICK_WORKLOADS: tuple[str, ...] = ("tiny320",)


@dataclasses.dataclass(frozen=True)
class Workload:
    """One batch of assigner inputs, NumPy float32/int32/bool.

    Shapes: ``points [A, 2]``, ``strides [A]``, ``pred_boxes [B, A, 4]`` xyxy,
    ``cls_logits [B, A, C]``, ``obj_logits [B, A]``, ``gt_boxes [B, M, 4]`` xyxy
    (zeros where padded), ``gt_labels [B, M]`` int32 (0 where padded),
    ``gt_mask [B, M]`` bool (real gts first in every row).
    """

    spec: WorkloadSpec
    points: np.ndarray
    strides: np.ndarray
    pred_boxes: np.ndarray
    cls_logits: np.ndarray
    obj_logits: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_mask: np.ndarray

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def batch_size(self) -> int:
        return self.pred_boxes.shape[0]

    @property
    def num_anchors(self) -> int:
        return self.points.shape[0]

    def summary(self) -> dict:
        """Sizes and gt statistics, for the benchmark's JSON."""
        counts = self.gt_mask.sum(axis=1)
        return {
            "name": self.name,
            "batch": self.batch_size,
            "image_size": list(self.spec.image_size),
            "strides": list(self.spec.strides),
            "num_anchors": self.num_anchors,
            "num_classes": self.spec.num_classes,
            "max_gt": self.gt_mask.shape[1],
            "gt_per_image": [int(c) for c in counts],
            "mean_gt": float(counts.mean()),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name != "spec"
        }

    def first_images(self, count: int) -> Workload:
        """The first ``count`` images of the batch (``points`` and ``strides`` are shared)."""
        shared = ("points", "strides")
        images = {k: v[:count] for k, v in self.arrays().items() if k not in shared}
        return dataclasses.replace(self, **images)

    def to_torch(self, device="cpu") -> dict:
        """The arrays as torch tensors on ``device`` (labels int64, as torch indexes)."""
        import torch

        out = {}
        for key, value in self.arrays().items():
            tensor = torch.from_numpy(np.ascontiguousarray(value))
            if key == "gt_labels":
                tensor = tensor.long()
            out[key] = tensor.to(device)
        return out

    def to_jax(self, device=None) -> dict:
        """The arrays as JAX arrays, committed to ``device`` when one is given."""
        import jax

        return {key: jax.device_put(value, device) for key, value in self.arrays().items()}


def _seed(name: str, batch: int, seed: int) -> int:
    return zlib.crc32(f"{name}/{batch}/{seed}".encode())


def _gt_counts(rng: np.random.Generator, spec: WorkloadSpec, batch: int) -> np.ndarray:
    if spec.num_gt is not None:
        return np.full(batch, min(spec.num_gt, spec.max_gt), np.int64)
    # 1 + negative binomial: mean ``mean_gt``, long right tail (COCO: median ~4,
    # mean ~7.3, a few images with dozens of objects).
    shape = 1.2
    mean_extra = spec.mean_gt - 1.0
    extra = rng.negative_binomial(shape, shape / (shape + mean_extra), size=batch)
    return np.clip(1 + extra, 1, spec.max_gt)


def _gt_boxes(
    rng: np.random.Generator, spec: WorkloadSpec, count: int
) -> tuple[np.ndarray, np.ndarray]:
    height, width = spec.image_size
    # Log-normal box scale (sqrt of area) and aspect ratio: COCO-like mix of
    # small (a few pixels, below the finest stride), medium and large boxes.
    scale = spec.median_box * np.exp(rng.normal(0.0, 0.9, count))
    scale = np.clip(scale, 3.0, 0.8 * min(height, width))
    aspect = np.exp(rng.normal(0.0, 0.45, count))  # w / h
    box_w = np.clip(scale * np.sqrt(aspect), 2.0, 0.95 * width)
    box_h = np.clip(scale / np.sqrt(aspect), 2.0, 0.95 * height)
    x1 = rng.uniform(0.0, width - box_w)
    y1 = rng.uniform(0.0, height - box_h)
    boxes = np.stack([x1, y1, x1 + box_w, y1 + box_h], axis=-1)
    # Zipf-like class frequencies (COCO: "person" dominates).
    weights = 1.0 / np.arange(1, spec.num_classes + 1) ** 0.8
    labels = rng.choice(spec.num_classes, size=count, p=weights / weights.sum())
    return boxes.astype(np.float32), labels.astype(np.int32)


def _head_outputs(
    rng: np.random.Generator,
    spec: WorkloadSpec,
    points: np.ndarray,
    strides: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    num_anchors, num_classes = points.shape[0], spec.num_classes
    cls_logits = (-4.6 + 0.6 * rng.standard_normal((num_anchors, num_classes))).astype(np.float32)
    obj_logits = (-5.0 + 0.8 * rng.standard_normal(num_anchors)).astype(np.float32)

    # Far anchors: a box of 2..6 strides roughly around the point.
    half = strides[:, None] * rng.uniform(1.0, 3.0, (num_anchors, 2))
    centre = points + strides[:, None] * rng.normal(0.0, 0.5, (num_anchors, 2))
    pred_boxes = np.concatenate([centre - half, centre + half], axis=-1)

    if gt_boxes.shape[0]:
        # Normalised distance of every anchor to every gt: 0 at the centre, 1 on
        # the border of the box grown by 2.5 strides (OTA's centre region).
        gt_centre = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # [M, 2]
        gt_half = (gt_boxes[:, 2:] - gt_boxes[:, :2]) / 2  # [M, 2]
        offset = np.abs(points[None, :, :] - gt_centre[:, None, :])  # [M, A, 2]
        reach = gt_half[:, None, :] + 2.5 * strides[None, :, None]
        dist = (offset / reach).max(axis=-1)  # [M, A]
        # Each anchor looks at the gt it is relatively closest to.
        owner = dist.argmin(axis=0)  # [A]
        owner_dist = dist[owner, np.arange(num_anchors)]
        near = owner_dist < 1.0
        idx = np.nonzero(near)[0]
        own = owner[idx]
        d = owner_dist[idx]
        # Level fit: anchors whose stride suits the box predict better.
        box_size = np.sqrt(np.prod(2 * gt_half[own], axis=-1))
        level_fit = np.abs(np.log2(box_size / (8.0 * strides[idx])))
        noise = 0.04 + 0.25 * d + 0.05 * level_fit  # relative box noise
        size = np.concatenate([2 * gt_half[own], 2 * gt_half[own]], axis=-1)
        jitter = rng.standard_normal((idx.size, 4)) * noise[:, None] * size
        boxes = gt_boxes[own] + jitter
        pred_boxes[idx] = boxes
        # Class and objectness: strong near the centre, fading with distance.
        strength = np.clip(1.0 - d, 0.0, 1.0) * np.exp(-0.3 * level_fit)
        cls_logits[idx, gt_labels[own]] += (
            5.0 * strength + 0.8 * rng.standard_normal(idx.size)
        ).astype(np.float32)
        obj_logits[idx] += (7.0 * strength + 0.8 * rng.standard_normal(idx.size)).astype(np.float32)
        # Some confusion with a random other class.
        confused = rng.random(idx.size) < 0.2
        other = rng.integers(0, num_classes, idx.size)
        cls_logits[idx[confused], other[confused]] += (2.5 * strength[confused]).astype(np.float32)

    # Valid boxes: positive size (at least 1 pixel).
    x1 = np.minimum(pred_boxes[:, 0], pred_boxes[:, 2] - 1.0)
    y1 = np.minimum(pred_boxes[:, 1], pred_boxes[:, 3] - 1.0)
    pred_boxes = np.stack([x1, y1, pred_boxes[:, 2], pred_boxes[:, 3]], axis=-1)
    return pred_boxes.astype(np.float32), cls_logits, obj_logits


def make_workload(spec: WorkloadSpec | str, batch: int = 16, *, seed: int = 0) -> Workload:
    """Draws one batch of ``spec`` (a ``WorkloadSpec`` or a name in ``WORKLOADS``).

    Deterministic in ``(spec.name, batch, seed)``.
    """
    if isinstance(spec, str):
        spec = WORKLOADS[spec]
    rng = np.random.default_rng(_seed(spec.name, batch, seed))
    points, strides = anchor_points(spec.image_size, spec.strides)
    points, strides = np.array(points, np.float32), np.array(strides, np.float32)
    num_anchors, max_gt, num_classes = points.shape[0], spec.max_gt, spec.num_classes

    pred_boxes = np.zeros((batch, num_anchors, 4), np.float32)
    cls_logits = np.zeros((batch, num_anchors, num_classes), np.float32)
    obj_logits = np.zeros((batch, num_anchors), np.float32)
    gt_boxes = np.zeros((batch, max_gt, 4), np.float32)
    gt_labels = np.zeros((batch, max_gt), np.int32)
    gt_mask = np.zeros((batch, max_gt), bool)
    for b, count in enumerate(_gt_counts(rng, spec, batch)):
        boxes, labels = _gt_boxes(rng, spec, int(count))
        gt_boxes[b, :count], gt_labels[b, :count], gt_mask[b, :count] = boxes, labels, True
        pred_boxes[b], cls_logits[b], obj_logits[b] = _head_outputs(
            rng, spec, points, strides, boxes, labels
        )
    return Workload(
        spec=spec,
        points=points,
        strides=strides,
        pred_boxes=pred_boxes,
        cls_logits=cls_logits,
        obj_logits=obj_logits,
        gt_boxes=gt_boxes,
        gt_labels=gt_labels,
        gt_mask=gt_mask,
    )


def make_workloads(names: Sequence[str], batch: int = 16, *, seed: int = 0) -> list[Workload]:
    return [make_workload(name, batch, seed=seed) for name in names]
