"""Detections drawn on validation images: ``<workdir>/detections.png``.

Ground-truth boxes are dashed, detections solid with their class name and
score; one colour per class. Uses matplotlib's object API with the Agg canvas,
so no display or global pyplot state is involved.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ota_train.evaluate import EvalImage

__all__ = ["draw_detections"]


def _class_colours(num_classes: int) -> list[tuple[float, ...]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if num_classes <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(num_classes)]


def draw_detections(
    path: str | os.PathLike,
    images: Sequence[EvalImage],
    class_names: Sequence[str],
    *,
    score_threshold: float = 0.3,
    columns: int = 3,
) -> str:
    """Draws ``images`` in a grid and saves a PNG; returns its path.

    Args:
      path: output file.
      images: images with ground truth and detections (see `EvalImage`).
      class_names: ``[C]`` names of the contiguous labels.
      score_threshold: detections scoring below this are not drawn.
      columns: images per row.
    """
    path = os.fspath(path)
    colours = _class_colours(len(class_names))
    count = max(len(images), 1)
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(4 * columns, 4 * rows), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, item in zip(axes, images, strict=False):
        ax.imshow(item.image)
        for box, label in zip(item.gt_boxes, item.gt_labels, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            ax.add_patch(
                Rectangle(
                    (x1, y1), x2 - x1, y2 - y1, fill=False, linestyle="--", linewidth=1.2,
                    edgecolor=colours[int(label)],
                )
            )  # fmt: skip
        shown = 0
        for box, score, label in zip(item.boxes, item.scores, item.classes, strict=True):
            if score < score_threshold:
                continue
            shown += 1
            x1, y1, x2, y2 = (float(v) for v in box)
            colour = colours[int(label)]
            ax.add_patch(
                Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=1.5, edgecolor=colour)
            )
            ax.text(
                x1, y1, f"{class_names[int(label)]} {score:.2f}", fontsize=6, color="white",
                va="bottom", bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "linewidth": 0},
            )  # fmt: skip
        ax.set_title(
            f"{len(item.gt_boxes)} gt (dashed), {shown} detections >= {score_threshold:g}",
            fontsize=8,
        )
    figure.tight_layout()
    figure.savefig(path)
    return path
