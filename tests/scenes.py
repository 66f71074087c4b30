"""Random but plausible detection scenes for tests: gts, anchor points and head outputs."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

import ota_jax


class Scene(NamedTuple):
    pred_boxes: np.ndarray  # [A, 4]
    cls_logits: np.ndarray  # [A, C]
    obj_logits: np.ndarray  # [A]
    points: np.ndarray  # [A, 2]
    strides: np.ndarray  # [A]
    gt_boxes: np.ndarray  # [M, 4] real gts only
    gt_labels: np.ndarray  # [M]

    @property
    def args(self) -> tuple:
        """The six leading positional arguments of every assigner and reference loop."""
        return (
            self.pred_boxes, self.cls_logits, self.points, self.strides,
            self.gt_boxes, self.gt_labels,
        )  # fmt: skip


def random_gt_boxes(
    rng: np.random.Generator, num_gt: int, image_size: tuple[int, int], min_size: float = 4.0
) -> np.ndarray:
    """Boxes of log-uniform size anywhere in the image (partly outside at the border)."""
    height, width = image_size
    size = np.exp(rng.uniform(np.log(min_size), np.log(0.6 * min(height, width)), (num_gt, 2)))
    size *= np.exp(rng.normal(0, 0.3, (num_gt, 2)))
    centre = rng.uniform(0, 1, (num_gt, 2)) * [width, height]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    return np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)


def make_scene(
    rng: np.random.Generator,
    *,
    num_gt: int,
    image_size: tuple[int, int] = (128, 128),
    strides: tuple[int, ...] = (8, 16, 32),
    num_classes: int = 7,
    gt_boxes: np.ndarray | None = None,
) -> Scene:
    """Predictions that look like a half-trained head: boxes near the gt an anchor
    sits in, plus noise; logits of the gt's class raised near it."""
    points, strides_ = (np.asarray(x) for x in ota_jax.anchor_points(image_size, strides))
    num_anchors = points.shape[0]
    if gt_boxes is None:
        gt_boxes = random_gt_boxes(rng, num_gt, image_size)
    gt_labels = rng.integers(0, num_classes, len(gt_boxes))

    half = strides_[:, None] * np.exp(rng.normal(0.5, 0.6, (num_anchors, 2)))
    pred = np.concatenate([points - half, points + half], axis=1)
    cls = rng.normal(-4.0, 1.0, (num_anchors, num_classes))
    obj = rng.normal(-3.0, 1.5, num_anchors)
    for box, label in zip(gt_boxes, gt_labels, strict=True):
        inside = (
            (points[:, 0] > box[0])
            & (points[:, 0] < box[2])
            & (points[:, 1] > box[1])
            & (points[:, 1] < box[3])
        )
        noise = rng.normal(0, 0.15, (inside.sum(), 4)) * np.tile(box[2:] - box[:2], 2)
        pred[inside] = np.where(
            rng.uniform(size=(inside.sum(), 1)) < 0.7, box + noise, pred[inside]
        )
        cls[inside, label] += rng.uniform(0, 6, inside.sum())
        obj[inside] += rng.uniform(0, 5, inside.sum())
    return Scene(
        pred.astype(np.float32),
        cls.astype(np.float32),
        obj.astype(np.float32),
        points,
        strides_,
        gt_boxes.astype(np.float32),
        gt_labels.astype(np.int32),
    )


def padded(scene: Scene, max_gt: int, rng: np.random.Generator | None = None):
    """``(gt_boxes [max_gt, 4], gt_labels [max_gt], gt_mask [max_gt], slots)`` with the real
    gts at random slots in their order (or first, without rng) and garbage in the padding.

    The gt order is kept: float32 sums depend on it, so a permutation may flip a
    near-tie (see test_gt_order_does_not_matter); padding alone must change nothing."""
    num_gt = len(scene.gt_boxes)
    slots = np.arange(num_gt)
    if rng is not None:
        slots = np.sort(rng.choice(max_gt, num_gt, replace=False))
    boxes = np.full((max_gt, 4), 7.0, np.float32)  # padding garbage must not matter
    labels = np.full(max_gt, 3, np.int32)
    mask = np.zeros(max_gt, bool)
    boxes[slots], labels[slots], mask[slots] = scene.gt_boxes, scene.gt_labels, True
    return boxes, labels, mask, slots


def reference_kwargs(config) -> dict:
    """The hyperparameters of an `OTAConfig` or `SimOTAConfig` as keyword arguments of
    ``benchmarks.reference``'s loops (OTA's rows unshifted, as the official code)."""
    if isinstance(config, ota_jax.OTAConfig):
        return dict(
            center_radius=config.center_radius,
            prior=config.prior,
            candidate_topk=config.candidate_topk,
            reg_weight=config.reg_weight,
            epsilon=config.epsilon,
            num_iters=config.num_iters,
            iou_eps=config.iou_eps,
            subtract_row_min=False,
        )
    return dict(
        center_radius=config.center_radius,
        prior=config.prior,
        candidate_topk=config.candidate_topk,
        iou_weight=config.iou_weight,
        penalty=config.penalty,
    )


def run_reference(reference_fn, scene: Scene, config, use_obj: bool = True) -> dict:
    """A ``benchmarks.reference`` loop's result on one scene, with ``config``'s hyperparameters."""
    return reference_fn(
        *scene.args,
        obj_logits=scene.obj_logits if use_obj else None,
        **reference_kwargs(config),
    )
