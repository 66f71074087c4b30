"""PyTorch per-image assignment loops, as the public reference code runs them.

These are the baselines ``ota_jax`` is timed and checked against. They follow
the control flow, tensor shapes and float32 arithmetic of

* the official OTA code (Megvii-BaseDetection/OTA, the cvpods FCOS head's
  ``get_ground_truth`` and its ``SinkhornDistance``), and
* YOLOX's ``get_assignments`` (Megvii-BaseDetection/YOLOX): the 2023 head
  (``get_geometry_constraint`` + ``simota_matching``) and, as an option, the
  2021 head (``get_in_boxes_info`` + ``dynamic_k_matching``),

re-written here as plain functions (no model, no cvpods): a Python loop over
the images of a batch, and for SimOTA a loop over the gts of an image. The
expensive parts are kept as they are on purpose: the ``[M, A, C]`` class-cost
tensors, 50 Sinkhorn iterations over the full ``[M + 1, A]`` cost, one
``torch.topk`` per gt.

Inputs use ``ota_jax``'s batched layout: ``pred_boxes [B, A, 4]`` xyxy pixels,
``cls_logits [B, A, C]``, ``obj_logits [B, A]``, ``points [A, 2]`` anchor
centres, ``strides [A]``, ``gt_boxes [B, M, 4]`` xyxy, ``gt_labels [B, M]``,
``gt_mask [B, M]``. Each loop returns ``gt_index [B, A]`` int64: the padded gt
slot an anchor is assigned to, or -1 for background.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "ota_assign_image",
    "ota_loop",
    "sigmoid_focal_loss",
    "simota_assign_image",
    "simota_loop",
    "sinkhorn_log_domain",
]


# --------------------------------------------------------------------------- helpers


def _ltrb(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Distances from points ``[A, 2]`` to the sides of boxes ``[..., 4]`` xyxy.

    cvpods' ``Shift2BoxTransform.get_deltas`` with unit weights: ``[..., 4]`` as
    ``(left, top, right, bottom)``, all positive when the point is inside.
    """
    return torch.cat((points - boxes[..., :2], boxes[..., 2:] - points), dim=-1)


def _levels(strides: torch.Tensor) -> list[tuple[int, int, float]]:
    """Contiguous ``(start, stop, stride)`` runs of the concatenated FPN levels."""
    values = strides.tolist()
    runs, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            runs.append((start, i, float(values[start])))
            start = i
    return runs


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Element-wise sigmoid focal loss (Lin et al. 2017), as cvpods/fvcore compute it."""
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    prob_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * ((1 - prob_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return loss


def _iou_ltrb(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of boxes given as ltrb distances from the same point (the OTA code's
    ``get_ious_and_iou_loss(..., box_mode="ltrb")``, float32 eps clamps)."""
    eps = torch.finfo(torch.float32).eps
    pred = torch.cat((-pred[..., :2], pred[..., 2:]), dim=-1)
    target = torch.cat((-target[..., :2], target[..., 2:]), dim=-1)
    pred_area = (pred[..., 2] - pred[..., 0]).clamp(min=0) * (pred[..., 3] - pred[..., 1]).clamp(
        min=0
    )
    target_area = (target[..., 2] - target[..., 0]).clamp(min=0) * (
        target[..., 3] - target[..., 1]
    ).clamp(min=0)
    inter_w = torch.min(pred[..., 2], target[..., 2]) - torch.max(pred[..., 0], target[..., 0])
    inter_h = torch.min(pred[..., 3], target[..., 3]) - torch.max(pred[..., 1], target[..., 1])
    inter = inter_w.clamp(min=0) * inter_h.clamp(min=0)
    union = target_area + pred_area - inter
    return inter / union.clamp(min=eps)


def sinkhorn_log_domain(
    supply: torch.Tensor, demand: torch.Tensor, cost: torch.Tensor, eps: float, num_iters: int
) -> torch.Tensor:
    """Entropic OT plan ``[M + 1, A]`` by the OTA code's ``SinkhornDistance``.

    Log domain, potentials initialised to ones, the anchor (column) potential
    updated first, then the supplier (row) potential, exactly ``num_iters``
    rounds, ``1e-8`` added inside the logs of the marginals.
    """
    u = torch.ones_like(supply)
    v = torch.ones_like(demand)

    def scaled(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (-cost + u.unsqueeze(-1) + v.unsqueeze(-2)) / eps

    for _ in range(num_iters):
        lse_cols = torch.logsumexp(scaled(u, v).transpose(-2, -1), dim=-1)
        v = eps * (torch.log(demand + 1e-8) - lse_cols) + v
        lse_rows = torch.logsumexp(scaled(u, v), dim=-1)
        u = eps * (torch.log(supply + 1e-8) - lse_rows) + u
    return torch.exp(scaled(u, v))


def _real_gts(gt_mask: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(gt_mask, as_tuple=False).flatten()


# --------------------------------------------------------------------------- OTA


@torch.no_grad()
def ota_assign_image(
    pred_boxes: torch.Tensor,
    cls_logits: torch.Tensor,
    points: torch.Tensor,
    strides: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    *,
    center_radius: float = 2.5,
    candidate_topk: int = 20,
    reg_weight: float = 1.5,
    epsilon: float = 0.1,
    num_iters: int = 50,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    penalty: float = 1e6,
    iou_eps: float = float(torch.finfo(torch.float32).eps),
    shift_rows: bool = False,
    levels: list[tuple[int, int, float]] | None = None,
) -> torch.Tensor:
    """OTA for one image, the official cvpods FCOS ``get_ground_truth`` body.

    Args:
      pred_boxes: ``[A, 4]`` decoded xyxy boxes (turned into the FCOS head's ltrb
        distances from each point, as the official code sees them).
      cls_logits: ``[A, C]`` class logits.
      points, strides: ``[A, 2]`` anchor centres and ``[A]`` strides, levels
        concatenated finest first.
      gt_boxes, gt_labels: ``[M, 4]`` xyxy and ``[M]`` int64 labels, real gts only.
      shift_rows: not in the official code. Subtracts each gt row's minimum
        cost before Sinkhorn (ASSIGNERS.md, OTA step 5), which changes only the
        rows of gts without any candidate anchor, where float32 at 1e6 is noise.
      levels: ``(start, stop, stride)`` of each FPN level in ``points``; derived
        from ``strides`` when not given (the official code holds them per level).

    Returns:
      ``[A]`` int64: index into the given gts, -1 for background.
    """
    num_gt, num_anchor = gt_boxes.shape[0], points.shape[0]
    if num_gt == 0:
        return torch.full((num_anchor,), -1, dtype=torch.int64, device=points.device)
    num_classes = cls_logits.shape[-1]
    box_delta = _ltrb(points, pred_boxes)  # [A, 4], the head's regression output

    # Candidates: inside the box (margin 0.01) and inside the centre square of
    # each level, clipped to the box.
    deltas = _ltrb(points, gt_boxes.unsqueeze(1))  # [M, A, 4]
    is_in_boxes = deltas.min(dim=-1).values > 0.01
    centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    is_in_centers = []
    for start, stop, stride in levels if levels is not None else _levels(strides):
        radius = stride * center_radius
        center_boxes = torch.cat(
            (
                torch.max(centers - radius, gt_boxes[:, :2]),
                torch.min(centers + radius, gt_boxes[:, 2:]),
            ),
            dim=-1,
        )
        center_deltas = _ltrb(points[start:stop], center_boxes.unsqueeze(1))
        is_in_centers.append(center_deltas.min(dim=-1).values > 0)
    is_in_centers = torch.cat(is_in_centers, dim=1)
    del centers, center_boxes, center_deltas
    is_in_boxes = is_in_boxes & is_in_centers

    shape = (num_gt, num_anchor, -1)
    gt_cls = F.one_hot(gt_labels, num_classes).float()
    # The [M, A, C] focal cost, summed over classes.
    loss_cls = sigmoid_focal_loss(
        cls_logits.unsqueeze(0).expand(shape),
        gt_cls.unsqueeze(1).expand(shape),
        alpha=focal_alpha,
        gamma=focal_gamma,
    ).sum(dim=-1)
    loss_cls_bg = sigmoid_focal_loss(
        cls_logits, torch.zeros_like(cls_logits), alpha=focal_alpha, gamma=focal_gamma
    ).sum(dim=-1)

    ious = _iou_ltrb(box_delta.unsqueeze(0).expand(shape), deltas)
    loss_delta = -ious.clamp(min=iou_eps).log()
    loss = loss_cls + reg_weight * loss_delta + penalty * (1 - is_in_boxes.float())
    if shift_rows:
        loss = loss - loss.min(dim=1, keepdim=True).values

    # Dynamic k from the top-q candidate IoUs; the background takes the rest.
    topk_ious, _ = torch.topk(ious * is_in_boxes.float(), candidate_topk, dim=1)
    mu = ious.new_ones(num_gt + 1)
    mu[:-1] = torch.clamp(topk_ious.sum(1).int(), min=1).float()
    mu[-1] = num_anchor - mu[:-1].sum()
    nu = ious.new_ones(num_anchor)
    loss = torch.cat([loss, loss_cls_bg.unsqueeze(0)], dim=0)

    pi = sinkhorn_log_domain(mu, nu, loss, epsilon, num_iters)

    # Each row rescaled to a maximum of 1, then each anchor takes its best row.
    rescale, _ = pi.max(dim=1)
    pi = pi / rescale.unsqueeze(1)
    _, matched = torch.max(pi, dim=0)
    return torch.where(matched == num_gt, torch.full_like(matched, -1), matched)


@torch.no_grad()
def ota_loop(
    pred_boxes: torch.Tensor,
    cls_logits: torch.Tensor,
    points: torch.Tensor,
    strides: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_mask: torch.Tensor,
    **kwargs,
) -> torch.Tensor:
    """OTA over a batch, one image at a time: ``gt_index [B, A]`` int64 (-1 background).

    ``kwargs`` go to ``ota_assign_image``.
    """
    out = []
    kwargs.setdefault("levels", _levels(strides))
    for b in range(pred_boxes.shape[0]):
        keep = _real_gts(gt_mask[b])
        local = ota_assign_image(
            pred_boxes[b],
            cls_logits[b],
            points,
            strides,
            gt_boxes[b, keep],
            gt_labels[b, keep],
            **kwargs,
        )
        out.append(torch.where(local >= 0, keep[local.clamp(min=0)], local))
    return torch.stack(out)


# --------------------------------------------------------------------------- SimOTA


def _xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat(((boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]), -1)


def _bboxes_iou_cxcywh(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """YOLOX's ``bboxes_iou(a, b, xyxy=False)``: ``[N, K]`` IoU of cxcywh boxes."""
    tl = torch.max(a[:, None, :2] - a[:, None, 2:] / 2, b[:, :2] - b[:, 2:] / 2)
    br = torch.min(a[:, None, :2] + a[:, None, 2:] / 2, b[:, :2] + b[:, 2:] / 2)
    area_a = torch.prod(a[:, 2:], 1)
    area_b = torch.prod(b[:, 2:], 1)
    enclosed = (tl < br).type(tl.type()).prod(dim=2)
    area_i = torch.prod(br - tl, 2) * enclosed
    return area_i / (area_a[:, None] + area_b - area_i)


def _geometry_2023(
    gt_cxcywh: torch.Tensor, points: torch.Tensor, strides: torch.Tensor, center_radius: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """YOLOX 2023 ``get_geometry_constraint``: centre square only, not clipped."""
    x_centers = points[:, 0].unsqueeze(0)
    y_centers = points[:, 1].unsqueeze(0)
    center_dist = strides.unsqueeze(0) * center_radius
    c_l = x_centers - (gt_cxcywh[:, 0:1] - center_dist)
    c_r = (gt_cxcywh[:, 0:1] + center_dist) - x_centers
    c_t = y_centers - (gt_cxcywh[:, 1:2] - center_dist)
    c_b = (gt_cxcywh[:, 1:2] + center_dist) - y_centers
    is_in_centers = torch.stack([c_l, c_t, c_r, c_b], 2).min(dim=-1).values > 0.0
    anchor_filter = is_in_centers.sum(dim=0) > 0
    return anchor_filter, is_in_centers[:, anchor_filter]


def _geometry_2021(
    gt_cxcywh: torch.Tensor, points: torch.Tensor, strides: torch.Tensor, center_radius: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """YOLOX 2021 ``get_in_boxes_info``: in any box or any centre square; a pair
    is allowed when in that gt's box AND its centre square."""
    num_gt, num_anchor = gt_cxcywh.shape[0], points.shape[0]
    x_centers = points[:, 0].unsqueeze(0).repeat(num_gt, 1)
    y_centers = points[:, 1].unsqueeze(0).repeat(num_gt, 1)
    cx, cy = gt_cxcywh[:, 0:1], gt_cxcywh[:, 1:2]
    half_w, half_h = 0.5 * gt_cxcywh[:, 2:3], 0.5 * gt_cxcywh[:, 3:4]
    b_l = x_centers - (cx - half_w).repeat(1, num_anchor)
    b_r = (cx + half_w).repeat(1, num_anchor) - x_centers
    b_t = y_centers - (cy - half_h).repeat(1, num_anchor)
    b_b = (cy + half_h).repeat(1, num_anchor) - y_centers
    is_in_boxes = torch.stack([b_l, b_t, b_r, b_b], 2).min(dim=-1).values > 0.0
    is_in_boxes_all = is_in_boxes.sum(dim=0) > 0
    radius = center_radius * strides.unsqueeze(0)
    c_l = x_centers - (cx.repeat(1, num_anchor) - radius)
    c_r = (cx.repeat(1, num_anchor) + radius) - x_centers
    c_t = y_centers - (cy.repeat(1, num_anchor) - radius)
    c_b = (cy.repeat(1, num_anchor) + radius) - y_centers
    is_in_centers = torch.stack([c_l, c_t, c_r, c_b], 2).min(dim=-1).values > 0.0
    is_in_centers_all = is_in_centers.sum(dim=0) > 0
    anchor_filter = is_in_boxes_all | is_in_centers_all
    allowed = is_in_boxes[:, anchor_filter] & is_in_centers[:, anchor_filter]
    return anchor_filter, allowed


def _simota_matching(
    cost: torch.Tensor, pair_wise_ious: torch.Tensor, num_gt: int, candidate_topk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """YOLOX ``simota_matching``: dynamic k, one ``topk`` per gt, conflicts to the
    gt of lowest cost. Returns the prefiltered anchors' fg mask and matched gt."""
    matching_matrix = torch.zeros_like(cost, dtype=torch.uint8)
    n_candidate_k = min(candidate_topk, pair_wise_ious.size(1))
    topk_ious, _ = torch.topk(pair_wise_ious, n_candidate_k, dim=1)
    dynamic_ks = torch.clamp(topk_ious.sum(1).int(), min=1)
    for gt_idx in range(num_gt):
        _, pos_idx = torch.topk(cost[gt_idx], k=int(dynamic_ks[gt_idx]), largest=False)
        matching_matrix[gt_idx][pos_idx] = 1
    anchor_matching_gt = matching_matrix.sum(0)
    if anchor_matching_gt.max() > 1:
        multiple = anchor_matching_gt > 1
        _, cost_argmin = torch.min(cost[:, multiple], dim=0)
        matching_matrix[:, multiple] *= 0
        matching_matrix[cost_argmin, multiple] = 1
    fg_inboxes = matching_matrix.sum(0) > 0
    matched_gt_inds = matching_matrix[:, fg_inboxes].argmax(0)
    return fg_inboxes, matched_gt_inds


@torch.no_grad()
def simota_assign_image(
    pred_boxes: torch.Tensor,
    cls_logits: torch.Tensor,
    points: torch.Tensor,
    strides: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    obj_logits: torch.Tensor | None = None,
    *,
    variant: str = "2023",
    center_radius: float | None = None,
    candidate_topk: int = 10,
    iou_weight: float = 3.0,
    penalty: float | None = None,
) -> torch.Tensor:
    """SimOTA for one image, the body of YOLOX's ``get_assignments``.

    Args:
      pred_boxes: ``[A, 4]`` decoded xyxy boxes (turned into YOLOX's cxcywh).
      cls_logits: ``[A, C]``; obj_logits: ``[A]`` or ``None`` (score is then
        ``sigmoid(cls)`` alone instead of ``sqrt(sigmoid(cls) * sigmoid(obj))``).
      points, strides: ``[A, 2]`` anchor centres, ``[A]`` strides.
      gt_boxes, gt_labels: ``[M, 4]`` xyxy, ``[M]`` int64, real gts only.
      variant: ``"2023"`` (centre prior, radius 1.5, penalty 1e6) or ``"2021"``
        (box-and-centre prior, radius 2.5, penalty 1e5; the ``yolox`` 0.3.0
        package). ``center_radius`` and ``penalty`` override the variant's.

    Returns:
      ``[A]`` int64: index into the given gts, -1 for background.
    """
    num_gt, num_anchor = gt_boxes.shape[0], points.shape[0]
    gt_index = torch.full((num_anchor,), -1, dtype=torch.int64, device=points.device)
    if num_gt == 0:
        return gt_index
    if variant == "2023":
        geometry, radius, default_penalty = _geometry_2023, 1.5, 1e6
    elif variant == "2021":
        geometry, radius, default_penalty = _geometry_2021, 2.5, 1e5
    else:
        raise ValueError(f"unknown YOLOX variant {variant!r}")
    radius = radius if center_radius is None else center_radius
    penalty = default_penalty if penalty is None else penalty
    num_classes = cls_logits.shape[-1]

    gt_cxcywh = _xyxy_to_cxcywh(gt_boxes)
    fg_mask, allowed = geometry(gt_cxcywh, points, strides, radius)
    boxes = _xyxy_to_cxcywh(pred_boxes)[fg_mask]
    cls_ = cls_logits[fg_mask]
    num_in = boxes.shape[0]
    if num_in == 0:
        return gt_index

    pair_wise_ious = _bboxes_iou_cxcywh(gt_cxcywh, boxes)
    gt_cls = F.one_hot(gt_labels.to(torch.int64), num_classes).float()
    pair_wise_ious_loss = -torch.log(pair_wise_ious + 1e-8)
    if variant == "2023":
        score = cls_.float().sigmoid()
        if obj_logits is not None:
            score = (score * obj_logits[fg_mask].float().unsqueeze(-1).sigmoid()).sqrt()
        # [M, A_f, C] binary cross-entropy, summed over classes.
        pair_wise_cls_loss = F.binary_cross_entropy(
            score.unsqueeze(0).repeat(num_gt, 1, 1),
            gt_cls.unsqueeze(1).repeat(1, num_in, 1),
            reduction="none",
        ).sum(-1)
    else:
        gt_cls = gt_cls.unsqueeze(1).repeat(1, num_in, 1)
        score = cls_.float().unsqueeze(0).repeat(num_gt, 1, 1).sigmoid_()
        if obj_logits is not None:
            obj_ = obj_logits[fg_mask].float().unsqueeze(-1)
            score = (score * obj_.unsqueeze(0).repeat(num_gt, 1, 1).sigmoid_()).sqrt_()
        pair_wise_cls_loss = F.binary_cross_entropy(score, gt_cls, reduction="none").sum(-1)
    del score

    cost = pair_wise_cls_loss + iou_weight * pair_wise_ious_loss + penalty * (~allowed)
    fg_inboxes, matched = _simota_matching(cost, pair_wise_ious, num_gt, candidate_topk)
    anchors = torch.nonzero(fg_mask, as_tuple=False).flatten()[fg_inboxes]
    gt_index[anchors] = matched
    return gt_index


@torch.no_grad()
def simota_loop(
    pred_boxes: torch.Tensor,
    cls_logits: torch.Tensor,
    points: torch.Tensor,
    strides: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_mask: torch.Tensor,
    obj_logits: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """SimOTA over a batch, one image at a time: ``gt_index [B, A]`` int64 (-1 background).

    ``kwargs`` go to ``simota_assign_image``.
    """
    out = []
    for b in range(pred_boxes.shape[0]):
        keep = _real_gts(gt_mask[b])
        local = simota_assign_image(
            pred_boxes[b],
            cls_logits[b],
            points,
            strides,
            gt_boxes[b, keep],
            gt_labels[b, keep],
            None if obj_logits is None else obj_logits[b],
            **kwargs,
        )
        out.append(torch.where(local >= 0, keep[local.clamp(min=0)], local))
    return torch.stack(out)
