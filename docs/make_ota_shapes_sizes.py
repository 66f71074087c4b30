"""Draws ``docs/ota_shapes_sizes.png``: each ``ota_shapes`` variant's object sizes beside COCO's.

python docs/make_ota_shapes_sizes.py

Sizes are ``sqrt(visible area)`` in pixels, which at the same P3 stride (8 px) is a
size relative to the strides. COCO's curve is the log-normal that has COCO's
published small/medium/large shares (``shapes.COCO_SIZE_SHARES``) at the limits of
its training scale (``shapes.COCO_STRIDE_LIMITS``): drawn from three numbers, not
from COCO's data, which no test or script here may download.
"""

from __future__ import annotations

import json
import pathlib
from statistics import NormalDist

import numpy as np

from ota_jax.data import shapes

NAMES = ("tiny_objects", "coco_like", "crowd")
STUDY_EDGES = (12, 16, 24, 32)  # ota-study's size buckets (train/study.py SIZE_BUCKETS).


def coco_lognormal() -> tuple[float, float]:
    """``(mu, sigma)`` of the log-normal ``sqrt(area)`` (pixels at COCO's training
    scale) whose shares below and above ``COCO_STRIDE_LIMITS`` are COCO's."""
    small, large = shapes.COCO_STRIDE_LIMITS
    z_small = NormalDist().inv_cdf(shapes.COCO_SIZE_SHARES["small"])
    z_large = NormalDist().inv_cdf(1 - shapes.COCO_SIZE_SHARES["large"])
    sigma = (np.log(large) - np.log(small)) / (z_large - z_small)
    return float(np.log(small) - z_small * sigma), float(sigma)


def object_size_histogram(
    configs: list[shapes.OtaShapesConfig], path: str, *, num_images: int = 200
) -> dict[str, dict[str, float]]:
    """One panel per config: its object sizes (density per ln(pixels)), COCO's
    log-normal, COCO's S/M/L limits (dashed) and the study's buckets (dotted), saved at
    ``path`` (PNG).

    Returns:
      ``{config name: shapes.size_shares of the drawn sizes}``.
    """
    from matplotlib.figure import Figure

    mu, sigma = coco_lognormal()
    figure = Figure(figsize=(6, 2.6 * len(configs)), layout="constrained")
    axes = figure.subplots(len(configs), 1, squeeze=False)[:, 0]
    shares = {}
    for ax, config in zip(axes, configs, strict=True):
        sizes = shapes.object_sizes(config, num_images=num_images)
        shares[config.name] = shapes.size_shares(sizes)
        # Densities per unit of ln(size): on a log axis, equal areas are equal shares.
        log_bins = np.linspace(np.log(2), np.log(1000), 50)
        ax.hist(
            sizes,
            bins=np.exp(log_bins),
            weights=np.full(len(sizes), 1 / (len(sizes) * (log_bins[1] - log_bins[0]))),
            color="#8fb3d9",
            label=f"ota_shapes/{config.name}",
        )
        x = np.geomspace(2, 1000, 200)
        pdf = np.exp(-((np.log(x) - mu) ** 2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
        ax.plot(x, pdf, color="#c0392b", label="COCO at 800 px (log-normal, its S/M/L shares)")
        for limit in shapes.COCO_STRIDE_LIMITS:
            ax.axvline(limit, color="#c0392b", lw=0.8, ls="--")
        for edge in STUDY_EDGES:
            ax.axvline(edge, color="#888888", lw=0.8, ls=":")
        text = "S/M/L here {:.0%}/{:.0%}/{:.0%}\nCOCO {:.0%}/{:.0%}/{:.0%}".format(
            *shares[config.name].values(), *shapes.COCO_SIZE_SHARES.values()
        )
        ax.text(0.98, 0.95, text, transform=ax.transAxes, ha="right", va="top", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("sqrt(area), pixels at P3 stride 8 (dotted: 12, 16, 24, 32)")
        ax.set_ylabel("density per ln(pixels)")
        ax.set_title(
            f"ota_shapes/{config.name}: {config.image_size} px, {len(sizes)} objects "
            f"in {num_images} images",
            fontsize=9,
        )
        ax.legend(loc="upper left", fontsize=7)
    figure.savefig(path, dpi=110)
    return shares


if __name__ == "__main__":
    path = pathlib.Path(__file__).with_name("ota_shapes_sizes.png")
    configs = [shapes.OtaShapes.builder_configs[name] for name in NAMES]
    print(path, json.dumps(object_size_histogram(configs, str(path)), indent=1))
