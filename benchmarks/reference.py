"""Plain NumPy, float64, one-image loop references of every assigner: the ground truth.

The JAX assigners are tested against these loops (tests/), and the benchmarks
compare against them (``benchmarks.agreement_float64``). They are written from
``/work/shared/ASSIGNERS.md`` only, as literal transliterations of the public
PyTorch loops:

* OTA: ``FCOS.get_ground_truth`` and ``SinkhornDistance`` of the official OTA
  code (Megvii-BaseDetection/OTA, cvpods ``playground/detection/coco/ota.*``).
* SimOTA: ``YOLOXHead.get_assignments`` / ``get_geometry_constraint`` (or, for
  ``prior="box_and_center"``, the 2021 ``get_in_boxes_info``) and
  ``simota_matching`` / ``dynamic_k_matching`` of Megvii-BaseDetection/YOLOX.
* The rule-based baselines ("Baselines" in ASSIGNERS.md), after mmdetection, loop
  for loop: FCOS (``FCOSHead._get_targets_single``: centre sampling, regression
  ranges, smallest-area gt), ATSS (``ATSSAssigner.assign``: per-level topk
  nearest points, mean + std IoU threshold, centre inside the gt, highest IoU
  wins) and Max-IoU (``MaxIoUAssigner.assign_wrt_overlaps`` with RetinaNet's
  settings, except that a low-quality match needs a gt-best IoU > 0; mmdet: >= 0).
* The prediction-aware baselines, with the semantics of the module docstrings of
  ``ota_jax.baselines.tal`` / ``.dsl``: task-aligned (mmdetection's
  ``TaskAlignedAssigner``, TOOD: top-k over all anchors, then the inside test;
  ultralytics', YOLOv8: top-k among the anchors inside), the metric
  ``score^alpha * IoU^beta`` computed directly (not in log space), a per-gt loop,
  conflicts to the taker of highest IoU, and the normalised metric (the soft
  classification target) per gt; and dynamic soft label (mmdetection's
  ``DynamicSoftLabelAssigner``, RTMDet: boolean-indexed valid anchors, the
  ``[P, M, C]`` soft-label BCE tensor built explicitly, the per-gt
  ``dynamic_k_matching`` loop). Ties are broken by a stable sort: lower anchor
  index first, and the first gt on conflicts.

Everything is float64 and deliberately naive: the ``[M, A, C]`` classification
tensors are built explicitly, the Sinkhorn loop is the official one, and the
SimOTA matching boolean-indexes the prefiltered anchors exactly like YOLOX.

Inputs are for ONE image and hold only real gts (no padding):

* ``pred_boxes`` ``[A, 4]`` predicted boxes, xyxy, pixels (for the rule-based
  baselines, for the ``ious`` output only)
* ``cls_logits`` ``[A, C]`` class logits
* ``points`` ``[A, 2]`` anchor centres ``(x, y)``, pixels
* ``strides`` ``[A]`` stride of each anchor's level
* ``gt_boxes`` ``[M, 4]`` xyxy, pixels; ``M`` may be 0
* ``gt_labels`` ``[M]`` int class ids in ``[0, C)``
* ``obj_logits`` ``[A]`` objectness logits, or ``None``

Outputs (numpy arrays in a dict): ``gt_index`` ``[A]`` (-1 background),
``labels`` ``[A]`` (-1 background), ``dynamic_k`` ``[M]`` (for the rule-based
baselines: the anchors each gt won), ``ious`` ``[A]`` (IoU of a positive's
predicted box with its assigned gt, 0 for background), ``fg_mask`` ``[A]`` and
per-assigner extras documented on each function (the rule-based baselines:
``ignore_mask`` ``[A]``).

Why here: the tests and the benchmarks both need these loops, and the
benchmarks must not import ``tests`` (test helpers are no library). Both import
this module as ``benchmarks.reference`` with the repository root on
``sys.path``, without any path manipulation: pytest puts it there (``tests`` is a
package, so pytest's default ``prepend`` import mode inserts its parent, the
rootdir, as it does for ``from tests.scenes import ...``), and ``python -m
benchmarks.<name>`` runs from the root. It is not in ``ota_jax``: the wheel
ships no reference loops and no SciPy dependency. It imports NumPy and SciPy
only (the ``test`` extra), and ``benchmarks/__init__.py`` imports nothing, so the
tests marked ``core`` import it at the dependency floors too (``.ci/run``).
"""

from __future__ import annotations

import math

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


def bce_with_logits(logits, targets):
    """Element-wise ``F.binary_cross_entropy_with_logits`` (soft targets allowed)."""
    return np.maximum(logits, 0.0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))


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
# OTA
# --------------------------------------------------------------------------
def sigmoid_focal_loss_logits(logits, targets, alpha, gamma):
    """Element-wise sigmoid focal loss from logits (fvcore / cvpods ``sigmoid_focal_loss``).

    ``ce = BCE-with-logits(x, t)``, ``p_t = p t + (1 - p)(1 - t)``,
    ``loss = alpha_t * ce * (1 - p_t) ** gamma``.
    """
    p = expit(logits)
    ce = bce_with_logits(logits, targets)
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
    if prior not in ("box_and_clipped_center", "center"):
        raise ValueError(f"unknown prior {prior!r}")
    num_gt = gt_boxes.shape[0]
    num_anchors = points.shape[0]
    mask = np.zeros((num_gt, num_anchors), dtype=bool)
    for i in range(num_gt):
        x1, y1, x2, y2 = gt_boxes[i]
        cx = (x1 + x2) / 2.0
        cy = (y1 + y2) / 2.0
        radius = center_radius * strides
        if prior == "center":
            mask[i] = (
                min_distance_to_box(points, cx - radius, cy - radius, cx + radius, cy + radius)
                > 0.0
            )
            continue
        in_box = min_distance_to_box(points, x1, y1, x2, y2) > 0.01
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


# --------------------------------------------------------------------------
# Rule-based baselines: FCOS, ATSS, Max-IoU
# --------------------------------------------------------------------------


def _float64(points, strides, gt_boxes, gt_labels, pred_boxes):
    return (
        np.asarray(points, np.float64).reshape(-1, 2),
        np.asarray(strides, np.float64).reshape(-1),
        np.asarray(gt_boxes, np.float64).reshape(-1, 4),
        np.asarray(gt_labels, np.int64).reshape(-1),
        np.asarray(pred_boxes, np.float64).reshape(-1, 4),
    )


def _result(gt_index, gt_labels, pred_boxes, gt_boxes, ignore_mask=None):
    """`_outputs` of a rule-based baseline: ``dynamic_k`` the anchors each gt won, and
    ``ignore_mask`` (of the background anchors only)."""
    num_anchors, num_gt = gt_index.shape[0], gt_boxes.shape[0]
    pred_ious = box_iou(gt_boxes, pred_boxes)
    won = np.bincount(gt_index[gt_index >= 0], minlength=num_gt)
    if ignore_mask is None:
        ignore_mask = np.zeros(num_anchors, bool)
    return _outputs(
        gt_index,
        gt_labels,
        np.where(np.isfinite(pred_ious), pred_ious, 0.0),
        won,
        ignore_mask=ignore_mask & (gt_index < 0),
    )


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
