"""A picture of the benchmark: ota_jax's speed-up over the PyTorch loops, per device.

Reads ``assign_bench.py`` or ``suite.py`` reports (``results/<device>/*.json``)
and draws one panel per device: a bar per workload and assigner with a PyTorch
loop (OTA, SimOTA), on a log scale; CPU panels show the 10x target of
``BENCHMARKS.md`` (its GPU targets are absolute times).
Each bar is one run's ratio (both sides timed in the same run), read as
docs/make_tables.py reads it (`harness.loop_rows`): a workload and assigner in
two reports of a panel is an error.

Example::

    python -m benchmarks.plot_speedups                      # docs/speedups.png
    python -m benchmarks.plot_speedups --panel "H100=h100/suite.json" --out /tmp/h100.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import NamedTuple

from . import harness
from . import workloads as wl

DEFAULT_PANELS = (
    "NVIDIA H100=nvidia-h100-80gb-hbm3/suite.json",
    "NVIDIA H200=nvidia-h200/suite.json",
    # The reports of the README's CPU column.
    "AMD EPYC, 2 cores=cpu-2core/assign_crowd_ota.json,cpu-2core/assign_crowd_simota.json,"
    "cpu-2core/assign.json",
)
TARGET = 10.0  # BENCHMARKS.md: at least 10x over each loop (the CPU target)
_COLORS = {"ota": "#1f77b4", "simota": "#ff7f0e"}
_NAMES = {"ota": "OTA", "simota": "SimOTA"}


class Runs(NamedTuple):
    """What a panel draws, from one or more reports."""

    rows: dict[tuple[str, str], dict]  # (workload, assigner) -> row with a speed-up
    backend: str | None  # the JAX backend they ran on
    commits: tuple[str, ...]  # the commits they ran at, short


def speedups(paths: list[Path]) -> Runs:
    """Every row with a PyTorch loop in the reports ``paths`` (`harness.loop_rows`),
    workloads in the order of ``workloads.WORKLOADS``, and the commits of the reports
    that hold them, in the order of ``paths``."""
    reports = {str(path): json.loads(Path(path).read_text()) for path in paths}
    reports = {name: report.get("assign", report) for name, report in reports.items()}
    rows = harness.loop_rows(reports, list(wl.WORKLOADS))
    held = [r for r in reports.values() if any(row.get("speedup") for row in r["results"])]
    commits = dict.fromkeys((r.get("git_commit") or "unknown")[:7] for r in held)
    backend = next((r["jax_backend"] for r in reversed(held) if "jax_backend" in r), None)
    return Runs(rows, backend, tuple(commits))


def parse_panel(spec: str) -> tuple[str, list[Path]]:
    """``"TITLE=a.json,b.json"`` (paths relative to ``benchmarks/results/``)."""
    title, sep, files = spec.partition("=")
    if not sep or not files:
        raise ValueError(f"--panel wants TITLE=FILE[,FILE...], got {spec!r}")
    return title, [harness.RESULTS / f for f in files.split(",")]


def plot(panels: list[tuple[str, Runs]], out: Path) -> Path:
    """One log-scale bar panel per ``(title, speedups(...))``; writes ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), sharey=True)
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (title, (rows, backend, commits)) in zip(axes, panels, strict=True):
        workloads = list(dict.fromkeys(w for w, _ in rows))
        assigners = [a for a in _COLORS if any(a == b for _, b in rows)]
        width = 0.8 / max(len(assigners), 1)
        for i, assigner in enumerate(assigners):
            xs, ys = [], []
            for x, workload in enumerate(workloads):
                row = rows.get((workload, assigner))
                if row is not None:
                    xs.append(x + (i - (len(assigners) - 1) / 2) * width)
                    ys.append(row["speedup"])
            bars = ax.bar(xs, ys, width, color=_COLORS[assigner], label=_NAMES[assigner])
            ax.bar_label(bars, [f"{y:.0f}x" for y in ys], fontsize=7, padding=1)
        if backend == "cpu":
            ax.axhline(TARGET, color="0.3", linestyle="--", linewidth=1)
            ax.text(len(workloads) - 0.5, TARGET * 1.08, "10x target", ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_xticks(range(len(workloads)), workloads, fontsize=8)
        label = "commit" if len(commits) == 1 else "commits"
        ax.set_title(f"{title}\n({label} {', '.join(commits)})", fontsize=10)
        ax.grid(axis="y", which="major", alpha=0.3)
    highest = max(row["speedup"] for _, runs in panels for row in runs.rows.values())
    ticks = [t for t in (1, 3, 10, 30, 100, 300, 1000, 3000) if t <= highest * 3]
    axes[0].set_ylim(1, highest * 3)
    axes[0].set_yticks(ticks, [f"{t}x" for t in ticks])
    axes[0].minorticks_off()
    axes[0].set_ylabel("speed-up over the PyTorch loop")
    axes[-1].legend(fontsize=8, loc="upper right")
    fig.suptitle("Assigning a batch of 16: ota_jax vs the per-image PyTorch loops", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--panel",
        action="append",
        default=None,
        help="TITLE=FILE[,FILE...], files relative to benchmarks/results/ (repeat for "
        "several panels; default: the H100 and 2-core CPU results)",
    )
    parser.add_argument("--out", default="docs/speedups.png")
    args = parser.parse_args(argv)
    panels = [parse_panel(spec) for spec in args.panel or DEFAULT_PANELS]
    return plot([(title, speedups(paths)) for title, paths in panels], Path(args.out))


if __name__ == "__main__":
    print(main())
