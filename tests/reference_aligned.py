"""Plain NumPy, float64, one-image loop references of the prediction-aware baselines.

Written from ``/work/shared/ASSIGNERS.md`` ("Baselines") and the semantics in the
module docstrings of ``ota_jax.baselines.tal`` / ``.dsl``, as transliterations of
the public PyTorch loops:

* Task-aligned: ``TaskAlignedAssigner`` of mmdetection (TOOD: top-k over all
  anchors, then the inside test) / ultralytics (YOLOv8: top-k among the anchors
  inside): the metric ``score^alpha * IoU^beta`` computed directly (not in log
  space), a per-gt loop, conflicts to the taker of highest IoU, and the
  normalised metric (the soft classification target) per gt.
* Dynamic soft label: mmdetection's ``DynamicSoftLabelAssigner`` (RTMDet):
  boolean-indexed valid anchors, the ``[P, M, C]`` soft-label BCE tensor built
  explicitly, the per-gt ``dynamic_k_matching`` loop.

Inputs are for ONE image and hold only real gts (no padding), as in
``tests/reference.py``; outputs are a dict with ``gt_index`` ``[A]`` (-1
background), ``labels`` ``[A]``, ``dynamic_k`` ``[M]``, ``ious`` ``[A]`` (IoU of a
positive's predicted box with its gt, 0 for background), ``fg_mask`` ``[A]`` and
extras documented on each function. Ties are broken by a stable sort: lower
anchor index first, and the first gt on conflicts.
"""

from __future__ import annotations

import numpy as np

from tests.reference import (
    _prepare_inputs,
    box_iou,
    class_probability,
    min_distance_to_box,
    one_hot,
    topq_dynamic_k,
)


def _outputs(gt_index, gt_labels, ious, dynamic_k, **extras) -> dict:
    """The common output dict from ``gt_index [A]`` and the ``[M, A]`` IoU matrix."""
    num_anchors = gt_index.shape[0]
    labels = np.full(num_anchors, -1, dtype=np.int64)
    matched_ious = np.zeros(num_anchors, dtype=np.float64)
    for a in range(num_anchors):
        g = gt_index[a]
        if g >= 0:
            labels[a] = gt_labels[g]
            matched_ious[a] = ious[g, a]
    return {
        "gt_index": gt_index,
        "labels": labels,
        "dynamic_k": np.asarray(dynamic_k, dtype=np.int64),
        "ious": matched_ious,
        "fg_mask": gt_index >= 0,
        **extras,
    }


# --------------------------------------------------------------------------
# Task-aligned (TOOD / YOLOv8)
# --------------------------------------------------------------------------
def second_smallest_stride(strides):
    """The second-smallest distinct stride (the smallest with one level): ultralytics
    8.4's ``stride[1]``, to which ``select_candidates_in_gts`` grows short gt sides."""
    levels = sorted(set(np.asarray(strides).tolist()))
    return levels[1] if len(levels) > 1 else levels[0]


def tal_reference(
    pred_boxes,
    cls_logits,
    points,
    strides,
    gt_boxes,
    gt_labels,
    *,
    obj_logits=None,
    alpha=1.0,
    beta=6.0,
    topk=13,
    candidates="topk_then_inside",
    inside_eps=0.01,
    grow_small_gts=False,
    soft_target_eps=1e-7,
) -> dict:
    """Task-aligned assignment for one image (float64).

    ``candidates="topk_then_inside"`` is mmdet's ``TaskAlignedAssigner.assign``: the
    metric over all anchors, each gt's ``topk`` largest, then those with metric > 0
    whose point is inside the gt. ``"inside_then_topk"`` is ultralytics': each gt's
    ``topk`` largest among the anchors inside it, those with metric > 0. With
    ``grow_small_gts``, the inside test uses the gt with each side shorter than
    `second_smallest_stride` set to it about the centre (ultralytics 8.4).

    Extras: ``metric`` ``[M, A]`` the alignment metric (all anchors),
    ``selected`` ``[M, A]`` each gt's picks before conflicts, ``soft_targets`` ``[A]``
    each positive's metric over (its gt's largest metric among the gt's positives
    + ``soft_target_eps``), times that gt's largest IoU among them (mmdet TOOD's
    ``norm_alignment_metrics``, ultralytics' ``norm_align_metric``), 0 for background.
    """
    (pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, obj_logits) = _prepare_inputs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, obj_logits
    )
    num_gt = gt_boxes.shape[0]
    num_anchors, num_classes = cls_logits.shape

    ious = box_iou(gt_boxes, pred_boxes)  # [M, A]
    prob = class_probability(cls_logits, obj_logits)  # [A, C]
    # Score of the gt's class, via the explicit [A, M, C] one-hot product.
    onehot = one_hot(gt_labels, num_classes)  # [M, C]
    scores = (prob[:, None, :] * onehot[None, :, :]).sum(axis=-1).T  # [M, A]
    metric = scores**alpha * ious**beta

    selected = np.zeros((num_gt, num_anchors), dtype=bool)
    for i in range(num_gt):
        x1, y1, x2, y2 = gt_boxes[i]
        if grow_small_gts:
            side = second_smallest_stride(strides)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            if x2 - x1 < side:
                x1, x2 = cx - side / 2, cx + side / 2
            if y2 - y1 < side:
                y1, y2 = cy - side / 2, cy + side / 2
        inside = min_distance_to_box(points, x1, y1, x2, y2) > inside_eps
        if candidates == "topk_then_inside":
            ranked = np.argsort(-metric[i], kind="stable")[:topk]
            picks = [a for a in ranked if inside[a]]
        elif candidates == "inside_then_topk":
            inside_ids = np.nonzero(inside)[0]
            picks = inside_ids[np.argsort(-metric[i, inside_ids], kind="stable")][:topk]
        else:
            raise ValueError(candidates)
        for a in picks:
            if metric[i, a] > 0:
                selected[i, a] = True

    gt_index = np.full(num_anchors, -1, dtype=np.int64)
    for a in range(num_anchors):
        takers = np.nonzero(selected[:, a])[0]
        if takers.size:
            gt_index[a] = takers[int(np.argmax(ious[takers, a]))]

    soft_targets = np.zeros(num_anchors)
    for g in range(num_gt):
        positives = np.nonzero(gt_index == g)[0]
        if positives.size == 0:
            continue
        largest_metric = metric[g, positives].max()
        largest_iou = ious[g, positives].max()
        for a in positives:
            soft_targets[a] = metric[g, a] / (largest_metric + soft_target_eps) * largest_iou

    return _outputs(
        gt_index,
        gt_labels,
        ious,
        selected.sum(axis=1),
        metric=metric,
        selected=selected,
        soft_targets=soft_targets,
    )


# --------------------------------------------------------------------------
# Dynamic soft label (RTMDet)
# --------------------------------------------------------------------------
def bce_with_logits(logits, targets):
    """Element-wise ``F.binary_cross_entropy_with_logits`` (soft targets allowed)."""
    return np.maximum(logits, 0.0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))


def class_logits(cls_logits, obj_logits):
    """Logits of `class_probability`: the logits themselves, or with an objectness
    logit those of ``sqrt(sigmoid(cls) * sigmoid(obj))``."""
    if obj_logits is None:
        return cls_logits
    prob = class_probability(cls_logits, obj_logits)
    return np.log(prob) - np.log1p(-prob)


def dsl_reference(
    pred_boxes,
    cls_logits,
    points,
    strides,
    gt_boxes,
    gt_labels,
    *,
    obj_logits=None,
    topk=13,
    iou_weight=3.0,
    soft_center_radius=3.0,
    iou_eps=1e-7,
) -> dict:
    """Dynamic soft label assignment for one image (mmdet ``DynamicSoftLabelAssigner``, float64).

    Extras: ``valid`` ``[A]`` the prefiltered anchors, ``cost`` ``[M, A]`` (``+inf``
    on anchors that are not valid), ``selected`` ``[M, A]`` each gt's picks before
    conflicts. Without any valid anchor (or gt) everything is background and
    ``dynamic_k`` is 1 per gt (the formula over an empty set).
    """
    (pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, obj_logits) = _prepare_inputs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, obj_logits
    )
    num_gt = gt_boxes.shape[0]
    num_anchors, num_classes = cls_logits.shape

    is_in_gts = np.zeros((num_anchors, num_gt), dtype=bool)
    for i in range(num_gt):
        is_in_gts[:, i] = min_distance_to_box(points, *gt_boxes[i]) > 0.0
    valid = is_in_gts.sum(axis=1) > 0
    anchor_ids = np.nonzero(valid)[0]
    num_valid = anchor_ids.size

    gt_index = np.full(num_anchors, -1, dtype=np.int64)
    cost = np.full((num_gt, num_anchors), np.inf)
    selected = np.zeros((num_gt, num_anchors), dtype=bool)
    all_ious = box_iou(gt_boxes, pred_boxes)  # [M, A]
    if num_gt == 0 or num_valid == 0:
        return _outputs(
            gt_index,
            gt_labels,
            all_ious,
            np.ones(num_gt),
            valid=valid,
            cost=cost,
            selected=selected,
        )

    gt_centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2.0
    distance = (
        np.sqrt(((points[anchor_ids, None, :] - gt_centres[None, :, :]) ** 2).sum(-1))
        / strides[anchor_ids, None]
    )  # [P, M]
    soft_center_prior = np.power(10.0, distance - soft_center_radius)

    pairwise_ious = all_ious[:, anchor_ids].T  # [P, M]
    iou_cost = -np.log(pairwise_ious + iou_eps) * iou_weight

    logits = class_logits(cls_logits, obj_logits)[anchor_ids]  # [P, C]
    onehot = np.broadcast_to(
        one_hot(gt_labels, num_classes)[None], (num_valid, num_gt, num_classes)
    )
    logits_pmc = np.broadcast_to(logits[:, None, :], (num_valid, num_gt, num_classes))
    soft_label = onehot * pairwise_ious[..., None]
    scale_factor = soft_label - 1.0 / (1.0 + np.exp(-logits_pmc))
    soft_cls_cost = (bce_with_logits(logits_pmc, soft_label) * np.abs(scale_factor) ** 2).sum(-1)

    cost_valid = soft_cls_cost + iou_cost + soft_center_prior  # [P, M]

    # dynamic_k_matching
    dynamic_ks = topq_dynamic_k(pairwise_ious.T, topk)
    matching = np.zeros((num_valid, num_gt), dtype=bool)
    for g in range(num_gt):
        pos = np.argsort(cost_valid[:, g], kind="stable")[: dynamic_ks[g]]
        matching[pos, g] = True
    selected[:, anchor_ids] = matching.T
    for p in range(num_valid):
        if matching[p].sum() > 1:
            best = int(np.argmin(cost_valid[p]))
            matching[p] = False
            matching[p, best] = True
    for p in range(num_valid):
        if matching[p].any():
            gt_index[anchor_ids[p]] = int(np.argmax(matching[p]))

    cost[:, anchor_ids] = cost_valid.T
    return _outputs(
        gt_index, gt_labels, all_ious, dynamic_ks, valid=valid, cost=cost, selected=selected
    )
