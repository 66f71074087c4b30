"""Plain NumPy, float64, one-image loop references of OTA and SimOTA.

This module is the ground truth the JAX assigners are tested against. It is
written from ``/work/shared/ASSIGNERS.md`` only, as a literal transliteration
of the two public PyTorch loops:

* OTA: ``FCOS.get_ground_truth`` and ``SinkhornDistance`` of the official OTA
  code (Megvii-BaseDetection/OTA, cvpods ``playground/detection/coco/ota.*``).
* SimOTA: ``YOLOXHead.get_assignments`` / ``get_geometry_constraint`` (or, for
  ``prior="box_and_center"``, the 2021 ``get_in_boxes_info``) and
  ``simota_matching`` / ``dynamic_k_matching`` of Megvii-BaseDetection/YOLOX.

Everything is float64 and deliberately naive: the ``[M, A, C]`` classification
tensors are built explicitly, the Sinkhorn loop is the official one, and the
SimOTA matching boolean-indexes the prefiltered anchors exactly like YOLOX.

Inputs are for ONE image and hold only real gts (no padding):

* ``pred_boxes`` ``[A, 4]`` predicted boxes, xyxy, pixels
* ``cls_logits`` ``[A, C]`` class logits
* ``points`` ``[A, 2]`` anchor centres ``(x, y)``, pixels
* ``strides`` ``[A]`` stride of each anchor's level
* ``gt_boxes`` ``[M, 4]`` xyxy, pixels; ``M`` may be 0
* ``gt_labels`` ``[M]`` int class ids in ``[0, C)``
* ``obj_logits`` ``[A]`` objectness logits, or ``None``

Outputs (numpy arrays in a dict): ``gt_index`` ``[A]`` (-1 background),
``labels`` ``[A]`` (-1 background), ``dynamic_k`` ``[M]``, ``ious`` ``[A]``
(IoU of a positive's predicted box with its assigned gt, 0 for background),
``fg_mask`` ``[A]`` and per-assigner extras documented on each function.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logsumexp

# Union clamp of the official OTA ``get_ious_and_iou_loss`` (torch float32 eps).
# It only matters for degenerate (zero-area) boxes; used for SimOTA as well.
UNION_EPS = float(np.finfo(np.float32).eps)


# --------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------
def _prepare_inputs(pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, obj_logits):
    """Convert all inputs to float64 / int64 numpy arrays with the documented shapes."""
    pred_boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    num_anchors = pred_boxes.shape[0]
    cls_logits = np.asarray(cls_logits, dtype=np.float64).reshape(num_anchors, -1)
    points = np.asarray(points, dtype=np.float64).reshape(num_anchors, 2)
    strides = np.asarray(strides, dtype=np.float64).reshape(num_anchors)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(gt_boxes.shape[0])
    if obj_logits is not None:
        obj_logits = np.asarray(obj_logits, dtype=np.float64).reshape(num_anchors)
    return pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, obj_logits


def box_iou(gt_boxes, pred_boxes):
    """Plain IoU between every gt box and every predicted box, ``[M, A]``, float64.

    Widths, heights and intersections are clamped at 0 and the union at
    ``UNION_EPS``, as in the official OTA ``get_ious_and_iou_loss``.
    """
    num_gt = gt_boxes.shape[0]
    num_anchors = pred_boxes.shape[0]
    ious = np.zeros((num_gt, num_anchors), dtype=np.float64)
    pred_w = np.maximum(pred_boxes[:, 2] - pred_boxes[:, 0], 0.0)
    pred_h = np.maximum(pred_boxes[:, 3] - pred_boxes[:, 1], 0.0)
    pred_area = pred_w * pred_h
    for i in range(num_gt):
        gx1, gy1, gx2, gy2 = gt_boxes[i]
        gt_area = max(gx2 - gx1, 0.0) * max(gy2 - gy1, 0.0)
        inter_x1 = np.maximum(pred_boxes[:, 0], gx1)
        inter_y1 = np.maximum(pred_boxes[:, 1], gy1)
        inter_x2 = np.minimum(pred_boxes[:, 2], gx2)
        inter_y2 = np.minimum(pred_boxes[:, 3], gy2)
        inter_w = np.maximum(inter_x2 - inter_x1, 0.0)
        inter_h = np.maximum(inter_y2 - inter_y1, 0.0)
        inter = inter_w * inter_h
        union = gt_area + pred_area - inter
        ious[i] = inter / np.maximum(union, UNION_EPS)
    return ious


def one_hot(labels, num_classes):
    """One-hot float64 matrix ``[M, C]``."""
    out = np.zeros((labels.shape[0], num_classes), dtype=np.float64)
    for i, label in enumerate(labels):
        out[i, label] = 1.0
    return out


def class_probability(cls_logits, obj_logits):
    """``sigmoid(cls)`` or, with an objectness logit, ``sqrt(sigmoid(cls) * sigmoid(obj))``."""
    prob = expit(cls_logits)
    if obj_logits is not None:
        prob = np.sqrt(prob * expit(obj_logits)[:, None])
    return prob


def min_distance_to_box(points, x1, y1, x2, y2):
    """``min(px - x1, py - y1, x2 - px, y2 - py)`` per point; box edges may be per-point arrays."""
    px = points[:, 0]
    py = points[:, 1]
    deltas = np.stack([px - x1, py - y1, x2 - px, y2 - py], axis=-1)
    return deltas.min(axis=-1)


def topq_dynamic_k(ious, candidate_topk):
    """Dynamic k per row: ``max(1, int(sum of the top-q values))``, q = min(topk, #columns).

    ``int`` truncates toward zero like torch's ``.int()`` (values are >= 0).
    """
    num_rows, num_cols = ious.shape
    q = min(candidate_topk, num_cols)
    ks = np.zeros(num_rows, dtype=np.int64)
    for i in range(num_rows):
        top = np.sort(ious[i])[::-1][:q]
        ks[i] = max(1, int(top.sum()))
    return ks


# --------------------------------------------------------------------------
# OTA
# --------------------------------------------------------------------------
def sigmoid_focal_loss_logits(logits, targets, alpha, gamma):
    """Element-wise sigmoid focal loss from logits (fvcore / cvpods ``sigmoid_focal_loss``).

    ``ce = BCE-with-logits(x, t)``, ``p_t = p t + (1 - p)(1 - t)``,
    ``loss = alpha_t * ce * (1 - p_t) ** gamma``.
    """
    p = expit(logits)
    ce = np.maximum(logits, 0.0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    p_t = p * targets + (1.0 - p) * (1.0 - targets)
    loss = ce * (1.0 - p_t) ** gamma
    if alpha >= 0:
        alpha_t = alpha * targets + (1.0 - alpha) * (1.0 - targets)
        loss = alpha_t * loss
    return loss


def sigmoid_focal_loss_prob(prob, targets, alpha, gamma):
    """Element-wise focal loss from a probability: ``-alpha_t (1 - p_t)^gamma log(p_t)``.

    Used when an objectness logit is given (``prob = sqrt(sig(cls) sig(obj))``).
    No clamp on the log: in float64 it is only infinite for logits beyond ~37.
    """
    p_t = prob * targets + (1.0 - prob) * (1.0 - targets)
    alpha_t = alpha * targets + (1.0 - alpha) * (1.0 - targets)
    with np.errstate(divide="ignore"):
        log_p_t = np.log(p_t)
    return -alpha_t * (1.0 - p_t) ** gamma * log_p_t


def ota_candidate_mask(points, strides, gt_boxes, center_radius, prior="box_and_clipped_center"):
    """OTA pair candidate mask ``[M, A]``: inside the gt box AND inside the clipped centre square.

    In box: all four distances of the anchor centre to the gt box > 0.01.
    Centre square: half-width ``center_radius * stride`` around the gt centre,
    clipped to the gt box, all four distances > 0.
    ``prior="center"`` (our opt-in, not the official rule): inside the unclipped centre
    square, all four distances > 0, in the box or not.
    """
    num_gt = gt_boxes.shape[0]
    num_anchors = points.shape[0]
    mask = np.zeros((num_gt, num_anchors), dtype=bool)
    for i in range(num_gt):
        x1, y1, x2, y2 = gt_boxes[i]
        in_box = min_distance_to_box(points, x1, y1, x2, y2) > 0.01
        cx = (x1 + x2) / 2.0
        cy = (y1 + y2) / 2.0
        radius = center_radius * strides
        if prior == "center":
            mask[i] = (
                min_distance_to_box(points, cx - radius, cy - radius, cx + radius, cy + radius)
                > 0.0
            )
            continue
        c_x1 = np.maximum(cx - radius, x1)
        c_y1 = np.maximum(cy - radius, y1)
        c_x2 = np.minimum(cx + radius, x2)
        c_y2 = np.minimum(cy + radius, y2)
        in_center = min_distance_to_box(points, c_x1, c_y1, c_x2, c_y2) > 0.0
        mask[i] = in_box & in_center
    return mask


def ota_costs(
    cls_logits,
    obj_logits,
    gt_labels,
    ious,
    candidate_mask,
    *,
    reg_weight,
    focal_alpha,
    focal_gamma,
    penalty,
    iou_eps,
):
    """Foreground cost ``[M, A]`` and background cost ``[A]`` of OTA.

    Foreground: focal loss against the one-hot label, summed over classes (the
    naive ``[M, A, C]`` tensor), ``+ reg_weight * -log(max(IoU, iou_eps))``,
    ``+ penalty`` where the pair is not a candidate.
    Background: focal loss against all-zero targets, summed over classes.
    """
    num_gt = gt_labels.shape[0]
    num_anchors, num_classes = cls_logits.shape
    targets = one_hot(gt_labels, num_classes)  # [M, C]
    logits_mac = np.broadcast_to(cls_logits[None], (num_gt, num_anchors, num_classes))
    targets_mac = np.broadcast_to(targets[:, None, :], (num_gt, num_anchors, num_classes))
    zeros_ac = np.zeros((num_anchors, num_classes), dtype=np.float64)
    if obj_logits is None:
        loss_cls = sigmoid_focal_loss_logits(logits_mac, targets_mac, focal_alpha, focal_gamma)
        loss_bg = sigmoid_focal_loss_logits(cls_logits, zeros_ac, focal_alpha, focal_gamma)
    else:
        prob = class_probability(cls_logits, obj_logits)
        prob_mac = np.broadcast_to(prob[None], (num_gt, num_anchors, num_classes))
        loss_cls = sigmoid_focal_loss_prob(prob_mac, targets_mac, focal_alpha, focal_gamma)
        loss_bg = sigmoid_focal_loss_prob(prob, zeros_ac, focal_alpha, focal_gamma)
    loss_cls = loss_cls.sum(axis=-1)  # [M, A]
    loss_bg = loss_bg.sum(axis=-1)  # [A]
    loss_reg = -np.log(np.maximum(ious, iou_eps))
    cost_fg = loss_cls + reg_weight * loss_reg + penalty * (1.0 - candidate_mask.astype(np.float64))
    return cost_fg, loss_bg


def ota_supplies(ious, candidate_mask, candidate_topk, num_anchors):
    """Supplies ``mu`` ``[M+1]`` (background last) and dynamic k ``[M]``.

    ``k_i = max(1, int(sum of top-q of IoU * candidate_mask))``, q = min(topk, A);
    background supply ``A - sum(k)`` (not clamped: negative if sum(k) > A).
    """
    dynamic_k = topq_dynamic_k(ious * candidate_mask.astype(np.float64), candidate_topk)
    mu = np.ones(dynamic_k.shape[0] + 1, dtype=np.float64)
    mu[:-1] = dynamic_k.astype(np.float64)
    mu[-1] = num_anchors - mu[:-1].sum()
    return mu, dynamic_k


def sinkhorn_official(mu, nu, cost, epsilon, num_iters):
    """Log-domain Sinkhorn exactly as the official OTA ``SinkhornDistance.forward``.

    Potentials ``u`` (rows) and ``v`` (columns) start at 1; each iteration
    updates ``v`` first, then ``u`` (with the new ``v``):

        M(u, v) = (-C + u[:, None] + v[None, :]) / eps
        v = eps * (log(nu + 1e-8) - logsumexp_rows(M(u, v))) + v
        u = eps * (log(mu + 1e-8) - logsumexp_cols(M(u, v))) + u

    and the plan is ``exp(M(u, v))``. Returns ``(plan, u, v)``.
    """
    u = np.ones_like(mu, dtype=np.float64)
    v = np.ones_like(nu, dtype=np.float64)

    def modified_cost(u, v):
        return (-cost + u[:, None] + v[None, :]) / epsilon

    for _ in range(num_iters):
        v = epsilon * (np.log(nu + 1e-8) - logsumexp(modified_cost(u, v), axis=0)) + v
        u = epsilon * (np.log(mu + 1e-8) - logsumexp(modified_cost(u, v), axis=1)) + u
    plan = np.exp(modified_cost(u, v))
    return plan, u, v


def ota_decode(plan):
    """Divide each row by its own max, then argmax over the M+1 rows per anchor.

    Returns the row index per anchor (``M`` = background); first index on ties.
    """
    rescaled = plan / plan.max(axis=1, keepdims=True)
    return np.argmax(rescaled, axis=0)


def ota_reference(
    pred_boxes,
    cls_logits,
    points,
    strides,
    gt_boxes,
    gt_labels,
    *,
    obj_logits=None,
    center_radius=2.5,
    prior="box_and_clipped_center",
    candidate_topk=20,
    reg_weight=1.5,
    epsilon=0.1,
    num_iters=50,
    focal_alpha=0.25,
    focal_gamma=2.0,
    penalty=1e6,
    iou_eps=1e-6,
    subtract_row_min=True,
) -> dict:
    """OTA assignment for one image (official cvpods FCOS loop, float64).

    ``subtract_row_min`` (default True, as ASSIGNERS.md step 5 prescribes):
    subtract each gt row's minimum cost before Sinkhorn (not the background
    row). With False the loop is bit-for-bit the official algorithm. Note that
    with a fixed number of iterations the shift is NOT exactly neutral: it is
    the official loop started from ``u_i = 1 + min_i`` instead of 1, so the
    plans differ until Sinkhorn has converged.

    Returns a dict with:
      ``gt_index`` [A] int (-1 background), ``labels`` [A] int (-1 background),
      ``dynamic_k`` [M] int, ``ious`` [A] (IoU with the assigned gt, 0 for bg),
      ``fg_mask`` [A] bool, ``candidate_mask`` [M, A] bool, ``iou_matrix`` [M, A],
      ``mu`` [M+1] supplies, ``cost`` [M+1, A] the unshifted cost (background
      row last), ``sinkhorn_cost`` [M+1, A] the cost actually given to
      Sinkhorn (equal to ``cost`` when ``subtract_row_min`` is False),
      ``plan`` [M+1, A] the transport plan (not rescaled), ``u``, ``v``.
    """
    (pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, obj_logits) = _prepare_inputs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, obj_logits
    )
    num_gt = gt_boxes.shape[0]
    num_anchors = pred_boxes.shape[0]

    candidate_mask = ota_candidate_mask(points, strides, gt_boxes, center_radius, prior)
    ious = box_iou(gt_boxes, pred_boxes)
    cost_fg, cost_bg = ota_costs(
        cls_logits,
        obj_logits,
        gt_labels,
        ious,
        candidate_mask,
        reg_weight=reg_weight,
        focal_alpha=focal_alpha,
        focal_gamma=focal_gamma,
        penalty=penalty,
        iou_eps=iou_eps,
    )
    mu, dynamic_k = ota_supplies(ious, candidate_mask, candidate_topk, num_anchors)
    nu = np.ones(num_anchors, dtype=np.float64)
    cost = np.concatenate([cost_fg, cost_bg[None, :]], axis=0)  # [M+1, A]

    sinkhorn_cost = cost.copy()
    if subtract_row_min:
        for i in range(num_gt):
            sinkhorn_cost[i] = sinkhorn_cost[i] - sinkhorn_cost[i].min()

    plan, u, v = sinkhorn_official(mu, nu, sinkhorn_cost, epsilon, num_iters)
    matched_rows = ota_decode(plan)

    gt_index = np.full(num_anchors, -1, dtype=np.int64)
    labels = np.full(num_anchors, -1, dtype=np.int64)
    matched_ious = np.zeros(num_anchors, dtype=np.float64)
    for a in range(num_anchors):
        row = matched_rows[a]
        if row != num_gt:
            gt_index[a] = row
            labels[a] = gt_labels[row]
            matched_ious[a] = ious[row, a]

    return {
        "gt_index": gt_index,
        "labels": labels,
        "dynamic_k": dynamic_k,
        "ious": matched_ious,
        "fg_mask": gt_index >= 0,
        "candidate_mask": candidate_mask,
        "iou_matrix": ious,
        "mu": mu,
        "cost": cost,
        "sinkhorn_cost": sinkhorn_cost,
        "plan": plan,
        "u": u,
        "v": v,
    }


# --------------------------------------------------------------------------
# SimOTA
# --------------------------------------------------------------------------
def binary_cross_entropy_prob(prob, targets):
    """Element-wise ``F.binary_cross_entropy``: logs clamped at -100 like torch."""
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(prob), -100.0)
        log_1mp = np.maximum(np.log(1.0 - prob), -100.0)
    return -(targets * log_p + (1.0 - targets) * log_1mp)


def simota_geometry(points, strides, gt_boxes, center_radius, prior):
    """YOLOX geometry: prefilter ``[A]`` and allowed pairs ``[M, A]`` (over ALL anchors).

    Centre region of a gt: square of half-width ``center_radius * stride``
    around the gt centre (not clipped), all four distances > 0.
    ``prior="center"``: prefilter = inside any gt's region; allowed = inside
    that gt's region.
    ``prior="box_and_center"``: prefilter = inside any gt box (distances > 0)
    OR any gt's region; allowed = inside that gt's box AND its region.
    """
    num_gt = gt_boxes.shape[0]
    num_anchors = points.shape[0]
    in_box = np.zeros((num_gt, num_anchors), dtype=bool)
    in_center = np.zeros((num_gt, num_anchors), dtype=bool)
    for i in range(num_gt):
        x1, y1, x2, y2 = gt_boxes[i]
        cx = (x1 + x2) / 2.0
        cy = (y1 + y2) / 2.0
        radius = center_radius * strides
        in_box[i] = min_distance_to_box(points, x1, y1, x2, y2) > 0.0
        in_center[i] = (
            min_distance_to_box(points, cx - radius, cy - radius, cx + radius, cy + radius) > 0.0
        )
    if prior == "center":
        prefilter = in_center.any(axis=0)
        allowed = in_center
    elif prior == "box_and_center":
        prefilter = in_box.any(axis=0) | in_center.any(axis=0)
        allowed = in_box & in_center
    else:
        raise ValueError(f"unknown prior {prior!r}")
    return prefilter, allowed


def simota_matching(cost, dynamic_k):
    """YOLOX ``simota_matching`` on the prefiltered columns; returns ``(matching, selected)``.

    Each gt selects its ``k`` lowest-cost columns (stable: lower column index
    first on ties) -> ``selected`` ``[M, P]``. A column selected by several
    gts is given to the gt of lowest cost for it over ALL gts (first on ties),
    even one that did not select it (YOLOX's quirk) -> ``matching`` ``[M, P]``.
    """
    num_gt, num_cols = cost.shape
    selected = np.zeros((num_gt, num_cols), dtype=bool)
    for i in range(num_gt):
        order = np.argsort(cost[i], kind="stable")
        selected[i, order[: dynamic_k[i]]] = True
    matching = selected.copy()
    num_matches = selected.sum(axis=0)
    for j in range(num_cols):
        if num_matches[j] > 1:
            best = int(np.argmin(cost[:, j]))
            matching[:, j] = False
            matching[best, j] = True
    return matching, selected


def simota_reference(
    pred_boxes,
    cls_logits,
    points,
    strides,
    gt_boxes,
    gt_labels,
    *,
    obj_logits=None,
    center_radius=1.5,
    prior="center",
    candidate_topk=10,
    iou_weight=3.0,
    penalty=1e6,
) -> dict:
    """SimOTA assignment for one image (YOLOX ``get_assignments``, float64).

    Returns a dict with:
      ``gt_index`` [A] int (-1 background), ``labels`` [A] int (-1 background),
      ``dynamic_k`` [M] int, ``ious`` [A] (IoU with the assigned gt, 0 for bg),
      ``fg_mask`` [A] bool, ``prefilter`` [A] bool, ``allowed`` [M, A] bool,
      ``iou_matrix`` [M, A] (all anchors),
      ``cost`` [M, A]: the YOLOX cost on prefiltered anchors, ``+inf`` on the
      others (they never take part),
      ``selected`` [M, A] bool: each gt's top-k picks before conflict resolution.
    If no anchor is prefiltered (or M == 0) everything is background; then
    ``dynamic_k`` is ``max(1, int(0)) = 1`` per gt (the formula over an empty set).
    """
    (pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, obj_logits) = _prepare_inputs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, obj_logits
    )
    num_gt = gt_boxes.shape[0]
    num_anchors, num_classes = cls_logits.shape

    prefilter, allowed = simota_geometry(points, strides, gt_boxes, center_radius, prior)
    iou_matrix = box_iou(gt_boxes, pred_boxes)

    # Boolean-index the prefiltered anchors, exactly like YOLOX.
    anchor_ids = np.nonzero(prefilter)[0]
    num_in = anchor_ids.shape[0]
    ious_in = iou_matrix[:, anchor_ids]  # [M, P]
    allowed_in = allowed[:, anchor_ids]  # [M, P]
    prob_in = class_probability(cls_logits, obj_logits)[anchor_ids]  # [P, C]

    targets = one_hot(gt_labels, num_classes)  # [M, C]
    prob_mpc = np.broadcast_to(prob_in[None], (num_gt, num_in, num_classes))
    targets_mpc = np.broadcast_to(targets[:, None, :], (num_gt, num_in, num_classes))
    cls_cost = binary_cross_entropy_prob(prob_mpc, targets_mpc).sum(axis=-1)  # [M, P]
    iou_cost = -np.log(ious_in + 1e-8)
    cost_in = cls_cost + iou_weight * iou_cost + penalty * (~allowed_in).astype(np.float64)

    dynamic_k = topq_dynamic_k(ious_in, candidate_topk)

    gt_index = np.full(num_anchors, -1, dtype=np.int64)
    labels = np.full(num_anchors, -1, dtype=np.int64)
    matched_ious = np.zeros(num_anchors, dtype=np.float64)
    selected = np.zeros((num_gt, num_anchors), dtype=bool)
    if num_gt > 0 and num_in > 0:
        matching_in, selected_in = simota_matching(cost_in, dynamic_k)
        selected[:, anchor_ids] = selected_in
        for col in range(num_in):
            if matching_in[:, col].any():
                g = int(np.argmax(matching_in[:, col]))
                a = anchor_ids[col]
                gt_index[a] = g
                labels[a] = gt_labels[g]
                matched_ious[a] = ious_in[g, col]

    cost = np.full((num_gt, num_anchors), np.inf, dtype=np.float64)
    cost[:, anchor_ids] = cost_in

    return {
        "gt_index": gt_index,
        "labels": labels,
        "dynamic_k": dynamic_k,
        "ious": matched_ious,
        "fg_mask": gt_index >= 0,
        "prefilter": prefilter,
        "allowed": allowed,
        "iou_matrix": iou_matrix,
        "cost": cost,
        "selected": selected,
    }
