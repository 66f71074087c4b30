"""Plain NumPy, float64, one-image loop references of the rule-based baselines.

Written from ``/work/shared/ASSIGNERS.md`` ("Baselines") and the mmdetection code
each baseline is modelled on, loop for loop, and deliberately naive:

* FCOS: ``FCOSHead._get_targets_single`` (centre sampling, regression ranges,
  smallest-area gt).
* ATSS: ``ATSSAssigner.assign`` (per-level topk nearest points, mean + std IoU
  threshold, centre inside the gt, highest IoU wins).
* Max-IoU: ``MaxIoUAssigner.assign_wrt_overlaps`` with RetinaNet's settings, except
  that a low-quality match needs a gt-best IoU > 0 (mmdet: >= 0).

Inputs are for ONE image and hold only real gts (no padding), as in
``tests/reference.py``: ``points [A, 2]``, ``strides [A]``, ``gt_boxes [M, 4]`` xyxy,
``gt_labels [M]``, and ``pred_boxes [A, 4]`` for the ``ious`` output only. Outputs
are a dict of numpy arrays: ``gt_index [A]`` (-1 background), ``labels [A]`` (-1
background), ``fg_mask [A]``, ``ignore_mask [A]``, ``dynamic_k [M]`` (anchors each
gt won) and ``ious [A]`` (IoU of a positive's predicted box with its gt, 0 else).
"""

from __future__ import annotations

import math

import numpy as np

from tests.reference import box_iou


def _float64(points, strides, gt_boxes, gt_labels, pred_boxes):
    return (
        np.asarray(points, np.float64).reshape(-1, 2),
        np.asarray(strides, np.float64).reshape(-1),
        np.asarray(gt_boxes, np.float64).reshape(-1, 4),
        np.asarray(gt_labels, np.int64).reshape(-1),
        np.asarray(pred_boxes, np.float64).reshape(-1, 4),
    )


def _result(gt_index, gt_labels, pred_boxes, gt_boxes, ignore_mask=None):
    """The output dict from ``gt_index [A]``."""
    num_anchors, num_gt = gt_index.shape[0], gt_boxes.shape[0]
    labels = np.full(num_anchors, -1, np.int64)
    ious = np.zeros(num_anchors)
    pred_ious = box_iou(gt_boxes, pred_boxes)
    won = np.zeros(num_gt, np.int64)
    for a in range(num_anchors):
        g = gt_index[a]
        if g >= 0:
            labels[a] = gt_labels[g]
            ious[a] = pred_ious[g, a] if np.isfinite(pred_ious[g, a]) else 0.0
            won[g] += 1
    if ignore_mask is None:
        ignore_mask = np.zeros(num_anchors, bool)
    return {
        "gt_index": gt_index,
        "labels": labels,
        "fg_mask": gt_index >= 0,
        "ignore_mask": ignore_mask & (gt_index < 0),
        "dynamic_k": won,
        "ious": ious,
    }


def _anchor_boxes(points, strides, scale):
    half = scale * strides / 2.0
    return np.stack(
        [points[:, 0] - half, points[:, 1] - half, points[:, 0] + half, points[:, 1] + half], 1
    )


def fcos_regress_ranges(strides):
    """Contiguous ranges ``(8 * previous stride, 8 * stride)`` for the distinct strides,
    -1 below the finest and inf above the coarsest: mmdet's ``((-1, 64), (64, 128),
    (128, 256), (256, 512), (512, inf))`` for strides 8 to 128."""
    levels = sorted(set(strides.tolist()))
    ranges = []
    for i, s in enumerate(levels):
        lo = -1.0 if i == 0 else 8.0 * levels[i - 1]
        hi = math.inf if i == len(levels) - 1 else 8.0 * s
        ranges.append((lo, hi))
    return ranges


def fcos_reference(
    pred_boxes,
    points,
    strides,
    gt_boxes,
    gt_labels,
    *,
    center_sampling=True,
    center_radius=1.5,
    regress_ranges=None,
) -> dict:
    """FCOS assignment for one image (mmdet ``FCOSHead._get_targets_single``)."""
    points, strides, gt_boxes, gt_labels, pred_boxes = _float64(
        points, strides, gt_boxes, gt_labels, pred_boxes
    )
    num_anchors, num_gt = points.shape[0], gt_boxes.shape[0]
    levels = sorted(set(strides.tolist()))
    if regress_ranges is None:
        regress_ranges = fcos_regress_ranges(strides)

    areas = np.full((num_anchors, num_gt), math.inf)
    for a in range(num_anchors):
        x, y = points[a]
        level = levels.index(strides[a])
        lo, hi = regress_ranges[level] if level < len(regress_ranges) else (math.inf, -math.inf)
        for g in range(num_gt):
            x1, y1, x2, y2 = gt_boxes[g]
            left, top, right, bottom = x - x1, y - y1, x2 - x, y2 - y
            if center_sampling:
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                radius = strides[a] * center_radius
                cx1 = cx - radius if cx - radius > x1 else x1
                cy1 = cy - radius if cy - radius > y1 else y1
                cx2 = x2 if cx + radius > x2 else cx + radius
                cy2 = y2 if cy + radius > y2 else cy + radius
                inside = min(x - cx1, y - cy1, cx2 - x, cy2 - y) > 0
            else:
                inside = min(left, top, right, bottom) > 0
            farthest = max(left, top, right, bottom)
            if inside and lo <= farthest <= hi:
                areas[a, g] = (x2 - x1) * (y2 - y1)

    gt_index = np.full(num_anchors, -1, np.int64)
    for a in range(num_anchors):
        best = math.inf
        for g in range(num_gt):
            if areas[a, g] < best:  # strict: the first gt keeps equal areas
                best, gt_index[a] = areas[a, g], g
    return _result(gt_index, gt_labels, pred_boxes, gt_boxes)


def atss_reference(
    pred_boxes, points, strides, gt_boxes, gt_labels, *, topk=9, anchor_scale=8.0
) -> dict:
    """ATSS assignment for one image (mmdet ``ATSSAssigner.assign``)."""
    points, strides, gt_boxes, gt_labels, pred_boxes = _float64(
        points, strides, gt_boxes, gt_labels, pred_boxes
    )
    num_anchors, num_gt = points.shape[0], gt_boxes.shape[0]
    overlaps = box_iou(gt_boxes, _anchor_boxes(points, strides, anchor_scale))  # [M, A]

    best_iou = np.full(num_anchors, -math.inf)
    gt_index = np.full(num_anchors, -1, np.int64)
    for g in range(num_gt):
        x1, y1, x2, y2 = gt_boxes[g]
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        distances = np.sqrt((points[:, 0] - cx) ** 2 + (points[:, 1] - cy) ** 2)
        candidates = []
        for level_stride in sorted(set(strides.tolist())):
            level_ids = np.nonzero(strides == level_stride)[0]
            nearest = np.argsort(distances[level_ids], kind="stable")[:topk]
            candidates.extend(level_ids[nearest].tolist())
        candidate_ious = overlaps[g, candidates]
        if len(candidates) < 2:
            continue  # torch's unbiased std of one value is NaN: nothing passes
        threshold = candidate_ious.mean() + candidate_ious.std(ddof=1)
        for a in candidates:
            x, y = points[a]
            inside = min(x - x1, y - y1, x2 - x, y2 - y) > 0.01
            if overlaps[g, a] >= threshold and inside and overlaps[g, a] > best_iou[a]:
                best_iou[a], gt_index[a] = overlaps[g, a], g
    return _result(gt_index, gt_labels, pred_boxes, gt_boxes)


def max_iou_reference(
    pred_boxes,
    points,
    strides,
    gt_boxes,
    gt_labels,
    *,
    pos_iou_thr=0.5,
    neg_iou_thr=0.4,
    anchor_scale=8.0,
    match_low_quality=True,
) -> dict:
    """Max-IoU assignment for one image (mmdet ``MaxIoUAssigner.assign_wrt_overlaps``)."""
    points, strides, gt_boxes, gt_labels, pred_boxes = _float64(
        points, strides, gt_boxes, gt_labels, pred_boxes
    )
    num_anchors, num_gt = points.shape[0], gt_boxes.shape[0]
    # mmdet's encoding: -1 ignored, 0 background, g + 1 positive for gt g.
    assigned = np.full(num_anchors, -1, np.int64)
    if num_gt == 0:
        assigned[:] = 0
    else:
        overlaps = box_iou(gt_boxes, _anchor_boxes(points, strides, anchor_scale))
        max_overlaps = overlaps.max(axis=0)
        argmax_overlaps = overlaps.argmax(axis=0)
        assigned[(max_overlaps >= 0) & (max_overlaps < neg_iou_thr)] = 0
        positive = max_overlaps >= pos_iou_thr
        assigned[positive] = argmax_overlaps[positive] + 1
        if match_low_quality:
            for g in range(num_gt):
                gt_max = overlaps[g].max()
                if gt_max > 0:  # mmdet: >= min_pos_iou = 0
                    assigned[overlaps[g] == gt_max] = g + 1
    gt_index = np.where(assigned > 0, assigned - 1, -1)
    return _result(gt_index, gt_labels, pred_boxes, gt_boxes, ignore_mask=assigned == -1)
