"""Detections drawn on validation images: ``<workdir>/detections.png``.

Ground-truth boxes are dashed, detections solid with their class name and
score; one colour per class. Uses matplotlib's object API with the Agg canvas,
so no display or global pyplot state is involved.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
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
    max_per_image: int = 20,
    columns: int = 3,
) -> str:
    """Draws ``images`` in a grid and saves a PNG; returns its path.

    Args:
      path: output file.
      images: images with ground truth and detections (see `EvalImage`).
      class_names: ``[C]`` names of the contiguous labels.
      score_threshold: detections scoring below this are not drawn.
      max_per_image: at most this many detections (the best) are drawn per image.
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
        ax.imshow(item.image, interpolation="nearest")
        for box, label in zip(item.gt_boxes, item.gt_labels, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            ax.add_patch(
                Rectangle(
                    (x1, y1), x2 - x1, y2 - y1, fill=False, linestyle="--", linewidth=1.2,
                    edgecolor=colours[int(label)],
                )
            )  # fmt: skip
        order = np.argsort(-np.asarray(item.scores), kind="stable")
        shown = [i for i in order if item.scores[i] >= score_threshold][:max_per_image]
        for box, score, label in zip(
            item.boxes[shown], item.scores[shown], item.classes[shown], strict=True
        ):
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
            f"{len(item.gt_boxes)} gt (dashed), {len(shown)} detections >= {score_threshold:g}",
            fontsize=8,
        )
    figure.tight_layout()
    figure.savefig(path)
    return path
