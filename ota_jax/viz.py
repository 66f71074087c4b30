"""Pictures of label assignment: which anchors each gt got, the cost and the plan.

Every function takes NumPy or JAX arrays for one image (no batch axis), draws
with matplotlib's object API (no pyplot state) and returns the
`matplotlib.figure.Figure`. Pass ``ax`` to draw into an existing figure; without
it a new figure is made. matplotlib is imported by this module only:
``import ota_jax`` does not need it (install it with ``pip install "ota-jax[viz]"``).

Example (``result = ota_jax.ota_assign(..., config=OTAConfig(return_transport=True))``)::

    from ota_jax import viz

    viz.plot_candidates(image, gt_boxes, gt_mask, points, strides, candidates)
    viz.plot_assignment(image, gt_boxes, gt_mask, points, strides, result.gt_index)
    viz.plot_cost_terms(class_cost, reg_cost, background_cost, candidates, reg_weight=1.5)
    viz.plot_cost_and_plan(result.transport.cost, result.transport.plan, gt_mask=gt_mask)
    viz.plot_dynamic_k(result.dynamic_k, gt_mask).savefig("dynamic_k.png")
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

try:
    from matplotlib import colormaps
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from matplotlib.patheffects import withStroke
except ImportError as error:
    raise ImportError(
        "ota_jax.viz needs matplotlib, which `pip install ota-jax` leaves out: "
        'pip install "ota-jax[viz]"'
    ) from error

__all__ = [
    "gt_colours",
    "plot_assignment",
    "plot_candidates",
    "plot_cost_and_plan",
    "plot_cost_terms",
    "plot_dynamic_k",
    "plot_ota_vs_simota",
    "plot_training_curves",
]

ArrayLike = Any  # np.ndarray | jax.Array | nested sequences

BACKGROUND_COLOUR = (0.6, 0.6, 0.6, 0.35)
"""RGBA of background (unassigned) anchor points."""

_HALO = [withStroke(linewidth=2.75, foreground="black", alpha=0.7)]
"""Drawn under each gt box, so that a box shows on an object of its own colour."""

RELEVANT_COST = 1e5
"""Costs at or above this are penalties (non-candidates, non-finite inputs): see
`plot_cost_and_plan`. Below OTA's default penalty (1e6) and the non-finite cost (1e8)."""


def gt_colours(num_gt: int) -> list[tuple[float, float, float, float]]:
    """``num_gt`` RGBA colours, gt ``i`` gets ``colours[i]`` (tab10, or tab20 beyond 10 gts)."""
    cmap = colormaps["tab10" if num_gt <= 10 else "tab20"]
    return [tuple(float(c) for c in cmap(i % cmap.N)) for i in range(num_gt)]


def _new_axes(ncols: int, *, width: float = 4.0, height: float = 4.0) -> list[Axes]:
    figure = Figure(figsize=(width * ncols, height), layout="constrained")
    return list(figure.subplots(1, ncols, squeeze=False).ravel())


def _as_axes_list(ax: Axes | Sequence[Axes] | None, count: int, **kwargs) -> list[Axes]:
    if ax is None:
        return _new_axes(count, **kwargs)
    axes = [ax] if isinstance(ax, Axes) else list(ax)
    if len(axes) != count:
        raise ValueError(f"expected {count} axes, got {len(axes)}")
    return axes


def _real_mask(gt_mask: ArrayLike | None, num_gt: int) -> np.ndarray:
    if gt_mask is None:
        return np.ones(num_gt, bool)
    mask = np.asarray(gt_mask, bool).reshape(-1)
    if mask.shape[0] != num_gt:
        raise ValueError(f"gt_mask has {mask.shape[0]} entries for {num_gt} gts")
    return mask


def plot_assignment(
    image: ArrayLike | None,
    gt_boxes: ArrayLike,
    gt_mask: ArrayLike | None,
    points: ArrayLike,
    strides: ArrayLike,
    gt_index: ArrayLike,
    *,
    levels: bool = True,
    image_size: tuple[int, int] | None = None,
    title: str | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    point_size: float = 14.0,
) -> Figure:
    """Gt boxes and the anchor points assigned to each, one colour per gt.

    Real gts are drawn as rectangles in their colour (`gt_colours`), each anchor
    assigned to gt ``i`` as a dot of the same colour, background anchors as small
    faded grey dots. With ``levels=True`` each FPN level (distinct stride, finest
    first) gets its own panel, titled with its stride and positive count.

    Args:
      image: ``[H, W, 3]`` (or ``[H, W]``) image, uint8 or float in [0, 1]; None
        draws a blank canvas of ``image_size``.
      gt_boxes: ``[M, 4]`` xyxy pixels.
      gt_mask: ``[M]`` bool, False for padding (not drawn); None: all real.
      points: ``[A, 2]`` anchor centres ``(x, y)`` in pixels.
      strides: ``[A]`` stride of each anchor's level.
      gt_index: ``[A]`` int, the gt each anchor is assigned to, -1 for background.
      levels: one panel per level (True) or all anchors on one panel.
      image_size: ``(H, W)`` of the canvas when ``image`` is None (default: the
        extent of the points and boxes).
      title: figure title (suptitle).
      ax: an `Axes`, or one per level when ``levels=True``; None makes a figure.
      point_size: marker area of positive points (background points are smaller).

    Returns:
      The figure drawn into.
    """
    boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    num_gt = boxes.shape[0]
    real = _real_mask(gt_mask, num_gt)
    points = np.asarray(points, np.float32).reshape(-1, 2)
    strides = np.asarray(strides).reshape(-1)
    gt_index = np.asarray(gt_index).reshape(-1).astype(np.int64)
    if not (points.shape[0] == strides.shape[0] == gt_index.shape[0]):
        raise ValueError(
            f"points {points.shape}, strides {strides.shape} and gt_index {gt_index.shape} "
            "must have the same number of anchors"
        )
    if image is not None:
        image = np.asarray(image)
        height, width = image.shape[:2]
    elif image_size is not None:
        height, width = image_size
    else:
        extent = np.concatenate([points.reshape(-1), boxes[real].reshape(-1), [1.0]])
        height = width = math.ceil(float(extent.max()))

    level_strides = sorted(set(strides.tolist())) if levels else [None]
    axes = _as_axes_list(ax, len(level_strides))
    colours = np.asarray(gt_colours(num_gt), np.float32).reshape(num_gt, 4)
    positive = (gt_index >= 0) & (gt_index < num_gt)
    for axis, stride in zip(axes, level_strides, strict=True):
        on_level = np.ones_like(positive) if stride is None else strides == stride
        if image is not None:
            axis.imshow(image, interpolation="nearest", extent=(0, width, height, 0))
        axis.set_xlim(0, width)
        axis.set_ylim(height, 0)
        axis.set_aspect("equal")
        axis.set_xticks([])
        axis.set_yticks([])
        for i in np.flatnonzero(real):
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            axis.add_patch(
                Rectangle(
                    (x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=1.5,
                    edgecolor=colours[i], label=f"gt {i}", path_effects=_HALO,
                )
            )  # fmt: skip
        background = on_level & ~positive
        axis.scatter(
            points[background, 0], points[background, 1], s=point_size / 4,
            c=[BACKGROUND_COLOUR], linewidths=0, label="background",
        )  # fmt: skip
        fg = on_level & positive
        axis.scatter(
            points[fg, 0], points[fg, 1], s=point_size, c=colours[gt_index[fg]].reshape(-1, 4),
            edgecolors="black", linewidths=0.4, label="positive",
        )  # fmt: skip
        where = "all levels" if stride is None else f"stride {stride:g}"
        axis.set_title(f"{where}: {int(fg.sum())} positives", fontsize=9)
    figure = axes[0].figure
    if title is not None:
        figure.suptitle(title)
    return figure


def plot_candidates(
    image: ArrayLike | None,
    gt_boxes: ArrayLike,
    gt_mask: ArrayLike | None,
    points: ArrayLike,
    strides: ArrayLike,
    candidates: ArrayLike,
    *,
    levels: bool = True,
    image_size: tuple[int, int] | None = None,
    title: str | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    point_size: float = 14.0,
) -> Figure:
    """Each gt's candidate anchors (its geometric prior), one colour per gt.

    Drawn as `plot_assignment`, with an anchor that is a candidate of one or more
    real gts in the colour of the first of them; an anchor that is a candidate of
    several gts (an ambiguous anchor, which the assigner has to settle) is also
    ringed in black (scatter label ``"shared"``). Panel titles count the candidate
    anchors and the shared ones.

    Args:
      image, gt_boxes, gt_mask, points, strides, levels, image_size, title, ax,
        point_size: as for `plot_assignment`.
      candidates: ``[M, A]`` bool, anchor ``a`` is a candidate of gt ``m`` (OTA: inside
        the box and its centre region, see `ota_jax.priors`). Padding gts are ignored.

    Returns:
      The figure drawn into.
    """
    num_gt = np.asarray(gt_boxes).reshape(-1, 4).shape[0]
    real = _real_mask(gt_mask, num_gt)
    strides = np.asarray(strides).reshape(-1)
    candidates = np.asarray(candidates, bool).reshape(num_gt, -1) & real[:, None]
    if candidates.shape[1] != strides.shape[0]:
        raise ValueError(
            f"candidates has {candidates.shape[1]} anchors, strides {strides.shape[0]}"
        )
    count = candidates.sum(axis=0)
    first = np.where(count > 0, np.argmax(candidates, axis=0), -1)
    level_strides = sorted(set(strides.tolist())) if levels else [None]
    axes = _as_axes_list(ax, len(level_strides))
    plot_assignment(
        image, gt_boxes, gt_mask, points, strides, first, levels=levels,
        image_size=image_size, title=title, ax=axes, point_size=point_size,
    )  # fmt: skip
    points = np.asarray(points, np.float32).reshape(-1, 2)
    for axis, stride in zip(axes, level_strides, strict=True):
        on_level = np.ones(strides.shape, bool) if stride is None else strides == stride
        shared = on_level & (count > 1)
        axis.scatter(
            points[shared, 0], points[shared, 1], s=point_size * 3, facecolors="none",
            edgecolors="black", linewidths=1.0, label="shared",
        )  # fmt: skip
        where = "all levels" if stride is None else f"stride {stride:g}"
        axis.set_title(
            f"{where}: {int((on_level & (count > 0)).sum())} candidates, "
            f"{int(shared.sum())} shared",
            fontsize=9,
        )
    return axes[0].figure


def _relevant_columns(cost: np.ndarray, plan: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``[A]`` bool: some shown gt row has a real (finite, non-penalty) cost or plan mass."""
    gt_cost = cost[rows]
    gt_plan = plan[rows]
    cheap = np.isfinite(gt_cost) & (gt_cost < RELEVANT_COST)
    mass = gt_plan > 1e-6 * max(float(np.nanmax(gt_plan, initial=0.0)), 1e-30)
    return (cheap | mass).any(axis=0)


def plot_cost_and_plan(
    cost: ArrayLike,
    plan: ArrayLike,
    *,
    gt_mask: ArrayLike | None = None,
    relevant_only: bool = True,
    max_anchors: int | None = None,
    ax: Sequence[Axes] | None = None,
) -> Figure:
    """Heat maps of an OTA transport problem: the cost (left) and the plan (right).

    Rows are the gts (labelled by index) then the background (last, labelled
    ``"bg"``); columns are anchors. Pass ``result.transport.cost`` and ``.plan``
    of ``ota_assign(..., config=OTAConfig(return_transport=True))``. Costs at or
    above `RELEVANT_COST` (the candidate penalty) or non-finite are drawn blank,
    so the colour scale shows the real costs. Each gt row of the cost is shifted
    by a constant inside OTA (see ``ota_jax.ota``): compare along a row.

    Args:
      cost: ``[M+1, A]`` float cost, background row last.
      plan: ``[M+1, A]`` float transport plan, same layout.
      gt_mask: ``[M]`` bool; only real gts are shown. None: all M rows.
      relevant_only: keep only the anchors some shown gt row has a real cost or
        plan mass on (the candidates); otherwise all A anchors.
      max_anchors: keep at most this many of those columns, those with the most
        gt plan mass first (then shown in anchor order).
      ax: two axes (cost, plan); None makes a figure.

    Returns:
      The figure drawn into. The x tick labels are the anchor indices shown.
    """
    cost = np.asarray(cost, np.float32)
    plan = np.asarray(plan, np.float32)
    if cost.ndim != 2 or cost.shape != plan.shape:
        raise ValueError(f"cost {cost.shape} and plan {plan.shape} must both be [M+1, A]")
    num_gt = cost.shape[0] - 1
    gt_rows = np.flatnonzero(_real_mask(gt_mask, num_gt))
    rows = np.concatenate([gt_rows, [num_gt]])
    columns = np.arange(cost.shape[1])
    if relevant_only:
        columns = np.flatnonzero(_relevant_columns(cost, plan, gt_rows))
    if max_anchors is not None and columns.size > max_anchors:
        mass = plan[np.ix_(gt_rows, columns)].sum(axis=0)
        columns = np.sort(columns[np.argsort(-mass, kind="stable")[:max_anchors]])
    shown_cost = cost[np.ix_(rows, columns)]
    shown_cost = np.where(
        np.isfinite(shown_cost) & (shown_cost < RELEVANT_COST), shown_cost, np.nan
    )
    shown_plan = plan[np.ix_(rows, columns)]

    axes = _as_axes_list(ax, 2, width=max(4.0, min(12.0, 0.12 * columns.size + 2.0)), height=3.0)
    row_labels = [str(int(i)) for i in gt_rows] + ["bg"]
    _heat_map(axes[0], shown_cost, "cost", "viridis", row_labels, columns, cost.shape[1])
    _heat_map(axes[1], shown_plan, "plan", "magma", row_labels, columns, cost.shape[1])
    return axes[0].figure


def _heat_map(
    axis: Axes,
    data: np.ndarray,
    title: str,
    cmap_name: str,
    row_labels: Sequence[str],
    columns: np.ndarray,
    num_anchors: int,
) -> None:
    """``data [rows, columns]`` as an image with a colour bar; NaN is drawn light grey."""
    cmap = colormaps[cmap_name].with_extremes(bad=(0.85, 0.85, 0.85))
    image = axis.imshow(data, aspect="auto", interpolation="nearest", cmap=cmap)
    axis.figure.colorbar(image, ax=axis, shrink=0.8)
    axis.set_yticks(np.arange(len(row_labels)), row_labels)
    tick_step = max(1, math.ceil(columns.size / 20))
    axis.set_xticks(np.arange(0, columns.size, tick_step), columns[::tick_step].astype(str))
    axis.tick_params(axis="x", labelrotation=90, labelsize=6)
    axis.set_xlabel(f"anchor ({columns.size} of {num_anchors})")
    axis.set_ylabel("gt")
    axis.set_title(title)


def plot_cost_terms(
    class_cost: ArrayLike,
    reg_cost: ArrayLike,
    background_cost: ArrayLike,
    candidates: ArrayLike | None = None,
    *,
    gt_mask: ArrayLike | None = None,
    reg_weight: float = 1.0,
    max_anchors: int | None = None,
    ax: Sequence[Axes] | None = None,
) -> Figure:
    """OTA's cost matrix and its two terms: three heat maps stacked, gts then ``"bg"`` as rows.

    Top, the classification cost of each (gt, anchor) pair and, in the ``"bg"`` row,
    of each anchor against the background (all-zero target); middle, the regression
    cost (no background row: blank); bottom, the total ``class + reg_weight * reg``
    with the background row, the matrix the transport solves. Pairs that are not
    candidates are blank in every panel (OTA adds a large penalty to them).

    Args:
      class_cost: ``[M, A]`` e.g. the pair cost of `ota_jax.costs.focal_class_cost`.
      reg_cost: ``[M, A]`` e.g. ``-log(IoU)`` of each gt with each predicted box.
      background_cost: ``[A]`` the background cost of `ota_jax.costs.focal_class_cost`.
      candidates: ``[M, A]`` bool candidate pairs; None: every pair.
      gt_mask: ``[M]`` bool; only real gts are shown. None: all M.
      reg_weight: weight of the regression term in the total.
      max_anchors: show at most this many anchors: each gt's cheapest candidate
        (by total cost), then each gt's second cheapest, and so on (then shown in
        anchor order), so that every gt keeps some columns.
      ax: three axes (class, regression, total); None makes a figure.

    Returns:
      The figure drawn into. Columns are the anchors some shown gt has as a
      candidate; the x tick labels are their indices.
    """
    class_cost = np.asarray(class_cost, np.float32)
    reg_cost = np.asarray(reg_cost, np.float32)
    background_cost = np.asarray(background_cost, np.float32).reshape(-1)
    if class_cost.ndim != 2 or class_cost.shape != reg_cost.shape:
        raise ValueError(
            f"class_cost {class_cost.shape} and reg_cost {reg_cost.shape} must both be [M, A]"
        )
    num_gt, num_anchors = class_cost.shape
    if background_cost.shape[0] != num_anchors:
        raise ValueError(
            f"background_cost has {background_cost.shape[0]} anchors, not {num_anchors}"
        )
    gt_rows = np.flatnonzero(_real_mask(gt_mask, num_gt))
    if candidates is None:
        candidates = np.ones((num_gt, num_anchors), bool)
    candidates = np.asarray(candidates, bool).reshape(num_gt, num_anchors)[gt_rows]
    pair = lambda cost: np.where(candidates & np.isfinite(cost), cost, np.nan)
    class_part = pair(class_cost[gt_rows])
    reg_part = pair(reg_cost[gt_rows])
    total = class_part + reg_weight * reg_part
    columns = np.flatnonzero(candidates.any(axis=0))
    if max_anchors is not None and columns.size > max_anchors:
        # Every gt's cheapest anchor first, then every gt's second cheapest, and so on.
        shown = np.where(np.isnan(total), np.inf, total)[:, columns]
        rank = np.argsort(np.argsort(shown, axis=1, kind="stable"), axis=1, kind="stable")
        rank = np.where(np.isfinite(shown), rank, columns.size).min(axis=0)
        order = np.lexsort((shown.min(axis=0), rank))
        columns = np.sort(columns[order[:max_anchors]])
    blank = np.full((1, columns.size), np.nan, np.float32)
    background = background_cost[None, columns]
    panels = (
        (np.concatenate([class_part[:, columns], background]), "classification"),
        (np.concatenate([reg_part[:, columns], blank]), "regression"),
        (np.concatenate([total[:, columns], background]), f"class + {reg_weight:g} x regression"),
    )
    if ax is None:
        width = max(4.0, min(12.0, 0.12 * columns.size + 2.0))
        rows = len(gt_rows) + 1
        figure = Figure(figsize=(width, 3 * (0.25 * rows + 1.2)), layout="constrained")
        axes = list(figure.subplots(3, 1, squeeze=False).ravel())
    else:
        axes = _as_axes_list(ax, 3)
    row_labels = [str(int(i)) for i in gt_rows] + ["bg"]
    for axis, (data, name) in zip(axes, panels, strict=True):
        _heat_map(axis, data, name, "viridis", row_labels, columns, num_anchors)
    return axes[0].figure


def plot_dynamic_k(
    dynamic_k: ArrayLike,
    gt_mask: ArrayLike | None = None,
    *,
    labels: Sequence[str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Bar chart of the number of anchors (k) each real gt supplies.

    Args:
      dynamic_k: ``[M]`` int, ``Assignment.dynamic_k``.
      gt_mask: ``[M]`` bool; padding gts are left out. None: all M.
      labels: ``[M]`` names for the x axis (default ``"gt i"``).
      ax: an `Axes`; None makes a figure.

    Returns:
      The figure drawn into; one bar per real gt, in gt order, in its `gt_colours`.
    """
    k = np.asarray(dynamic_k).reshape(-1)
    real = np.flatnonzero(_real_mask(gt_mask, k.shape[0]))
    if labels is not None and len(labels) != k.shape[0]:
        raise ValueError(f"{len(labels)} labels for {k.shape[0]} gts")
    names = [labels[i] if labels is not None else f"gt {i}" for i in real]
    (axis,) = _as_axes_list(ax, 1, width=max(3.0, 0.5 * real.size + 1.5), height=3.0)
    colours = gt_colours(k.shape[0])
    bars = axis.bar(np.arange(real.size), k[real], color=[colours[i] for i in real])
    axis.bar_label(bars, fontsize=7)
    axis.set_xticks(np.arange(real.size), names, rotation=45 if real.size > 8 else 0)
    axis.set_ylabel("dynamic k")
    axis.set_title(f"dynamic k of {real.size} gts (sum {int(k[real].sum())})")
    return axis.figure


def plot_ota_vs_simota(
    image: ArrayLike | None,
    gt_boxes: ArrayLike,
    gt_mask: ArrayLike | None,
    points: ArrayLike,
    strides: ArrayLike,
    ota_gt_index: ArrayLike,
    simota_gt_index: ArrayLike,
    *,
    image_size: tuple[int, int] | None = None,
    ax: Sequence[Axes] | None = None,
) -> Figure:
    """OTA's and SimOTA's assignments of one image side by side (all levels per panel).

    Args:
      image, gt_boxes, gt_mask, points, strides, image_size: as for `plot_assignment`.
      ota_gt_index: ``[A]`` int ``gt_index`` of ``ota_assign``.
      simota_gt_index: ``[A]`` int ``gt_index`` of ``simota_assign``.
      ax: two axes (OTA, SimOTA); None makes a figure.

    Returns:
      The figure; panel titles are ``"OTA: n positives"`` and ``"SimOTA: n positives"``.
    """
    axes = _as_axes_list(ax, 2)
    for axis, name, gt_index in (
        (axes[0], "OTA", ota_gt_index),
        (axes[1], "SimOTA", simota_gt_index),
    ):
        plot_assignment(
            image, gt_boxes, gt_mask, points, strides, gt_index,
            levels=False, image_size=image_size, ax=axis,
        )  # fmt: skip
        index = np.asarray(gt_index).reshape(-1)
        count = int(((index >= 0) & (index < np.asarray(gt_boxes).reshape(-1, 4).shape[0])).sum())
        axis.set_title(f"{name}: {count} positives", fontsize=10)
    return axes[0].figure


def _read_jsonl(path: str) -> list[dict]:
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # A torn last line of a killed run.
                continue
    return records


def _series(records: list[dict], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of ``name`` where it is logged and finite (null is NaN/inf)."""
    pairs = [
        (r["step"], r[name])
        for r in records
        if "step" in r and isinstance(r.get(name), int | float) and math.isfinite(r[name])
    ]
    steps = np.asarray([p[0] for p in pairs], np.int64)
    return steps, np.asarray([p[1] for p in pairs], np.float64)


def plot_training_curves(
    workdir: str | os.PathLike,
    *,
    loss_prefix: str = "train/loss",
    ax: Sequence[Axes] | None = None,
) -> Figure:
    """Loss terms over steps and, when evaluated, COCO AP, from an ``ota-train`` run.

    Reads ``<workdir>/metrics.jsonl`` (records ``{"step": s, "train/loss": ...,
    "eval/AP": ...}``). The left panel has one line per metric starting with
    ``loss_prefix`` (``train/loss``, ``train/loss_cls``, ...). The right panel,
    drawn when the run evaluated, has one line per ``eval/AP*`` metric; without
    ``eval/`` records, ``<workdir>/eval.json`` (final AP) is drawn as points at
    the last step.

    Args:
      workdir: the run's directory.
      loss_prefix: which metrics are loss terms.
      ax: axes to draw into: one (losses only) or two (losses, AP); None makes a figure.

    Returns:
      The figure drawn into.

    Raises:
      FileNotFoundError: no ``metrics.jsonl`` in ``workdir``.
    """
    workdir = os.fspath(workdir)
    records = _read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    names = sorted({key for r in records for key in r})
    loss_names = [n for n in names if n.startswith(loss_prefix)]
    ap_names = [n for n in names if n.startswith("eval/AP")]
    last_step = max((int(r["step"]) for r in records if "step" in r), default=0)
    final: dict[str, float] = {}
    eval_path = os.path.join(workdir, "eval.json")
    if not ap_names and os.path.exists(eval_path):
        with open(eval_path) as f:
            final = {k: float(v) for k, v in json.load(f).items() if k.startswith("AP")}
    has_ap = bool(ap_names or final)
    if ax is None:
        axes = _new_axes(2 if has_ap else 1, width=5.0, height=3.5)
    else:
        axes = [ax] if isinstance(ax, Axes) else list(ax)
        if len(axes) not in (1, 2):
            raise ValueError(f"expected 1 or 2 axes, got {len(axes)}")

    loss_axis = axes[0]
    for name in loss_names:
        steps, values = _series(records, name)
        loss_axis.plot(steps, values, marker="." if steps.size < 50 else None, label=name)
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss")
    loss_axis.set_title(os.path.basename(os.path.normpath(workdir)) or workdir, fontsize=9)
    if loss_names:
        loss_axis.legend(fontsize=7)
    if has_ap and len(axes) > 1:
        ap_axis = axes[1]
        for name in ap_names:
            steps, values = _series(records, name)
            ap_axis.plot(steps, values, marker="o", label=name.removeprefix("eval/"))
        for name, value in final.items():
            ap_axis.plot([last_step], [value], marker="o", linestyle="none", label=name)
        ap_axis.set_xlabel("step")
        ap_axis.set_ylabel("AP")
        ap_axis.set_title("evaluation", fontsize=9)
        ap_axis.legend(fontsize=7)
    return axes[0].figure
