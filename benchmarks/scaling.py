"""How ota_jax's assignment time grows with batch size, anchor count and gt count.

JAX only (no PyTorch). Around a base point (by default: batch 4, a 640x640
image with strides 8/16/32, i.e. 8400 anchor points, 20 gts per image padded to
100) one factor at a time is varied:

* ``batch``: images per batch;
* ``anchors``: the square image size (the anchor count grows with its square);
  the slope is fitted against the anchor count;
* ``gts``: real gts per image (the padding ``max_gt`` stays fixed, so the size
  buckets of ``ota_jax.buckets`` pick the rows that run, as in training). The
  gt points are nested: one draw of the largest count per (batch, image size),
  of which the first ``gts`` per image are kept (``first_gts``); every other
  point keeps the base count of the same kind of draw.

Workloads come from ``workloads.py`` (``make_workload`` of a ``WorkloadSpec``
built per point). For each point and assigner (``ota_assign_batch``,
``simota_assign_batch`` with default configs, or any assigner of
``ota_jax.assigners.ASSIGNERS`` named by ``--assigners``) it reports the median of
``--repeats`` calls after ``--warmup`` untimed ones (each ended by
``block_until_ready``; the timed calls go in rounds over all points, so that a
change of machine load hits every point alike) and the first call apart
(compilation), and for each factor the fitted exponent: the least-squares slope of log(ms) against
log(factor). Prints a markdown table and writes JSON and markdown.

Examples::

    python -m benchmarks.scaling                 # the default points (minutes on a CPU)
    python -m benchmarks.scaling --quick --out /tmp/scaling.json
    python -m benchmarks.scaling --batches 1,4,16 --images 640 --gts 20
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import numpy as np

from . import assign_bench, harness
from . import workloads as wl

ASSIGNERS = ("ota", "simota")  # the default; any registered assigner can be named
FACTORS = ("batch", "anchors", "gts")
STRIDES = (8, 16, 32)

# Base point and the values of each factor: (batch, image size, gts per image, max_gt).
DEFAULT = {
    "base": {"batch": 4, "image": 640, "gts": 20},
    "batches": (1, 2, 4, 8),
    "images": (320, 640, 960),
    "gts": (10, 20, 50, 100),
    "max_gt": 100,
    "repeats": 7,
}
QUICK = {
    "base": {"batch": 2, "image": 128, "gts": 3},
    "batches": (1, 2),
    "images": (96, 128),
    "gts": (3, 6),
    "max_gt": 8,
    "repeats": 2,
}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny points (seconds)")
    parser.add_argument("--batches", type=_ints, default=None, help="batch sizes (1,2,4,8)")
    parser.add_argument(
        "--images", type=_ints, default=None, help="square image sizes (320,640,960)"
    )
    parser.add_argument("--gts", type=_ints, default=None, help="gts per image (10,20,50,100)")
    parser.add_argument("--base-batch", type=int, default=None, help="base batch size (4)")
    parser.add_argument("--base-image", type=int, default=None, help="base image size (640)")
    parser.add_argument("--base-gts", type=int, default=None, help="base gts per image (20)")
    parser.add_argument("--max-gt", type=int, default=None, help="gt padding (100; >= every gts)")
    parser.add_argument(
        "--assigners", default=",".join(ASSIGNERS), help="ota,simota (any registered ones)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per point (7)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls after the first")
    parser.add_argument("--seed", type=int, default=0, help="workload seed")
    parser.add_argument(
        "--out",
        default=None,
        help="JSON path (benchmarks/results/<device>/scaling.json; quick: scaling_quick.json)",
    )
    parser.add_argument("--markdown", default=None, help="markdown path (the JSON path with .md)")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else DEFAULT
    args.batches = args.batches or preset["batches"]
    args.images = args.images or preset["images"]
    args.gts = args.gts or preset["gts"]
    args.base_batch = args.base_batch or preset["base"]["batch"]
    args.base_image = args.base_image or preset["base"]["image"]
    args.base_gts = args.base_gts or preset["base"]["gts"]
    args.max_gt = args.max_gt or max(preset["max_gt"], *args.gts, args.base_gts)
    args.repeats = args.repeats or preset["repeats"]
    args.assigners = tuple(a.strip() for a in args.assigners.split(",") if a.strip())
    known = list(assign_bench.registered())
    if set(args.assigners) - set(known):
        parser.error(f"--assigners must be among {known}")
    if args.max_gt < max(*args.gts, args.base_gts):
        parser.error("--max-gt must be at least every gt count")
    return args


def points(args) -> list[dict]:
    """The measured points: the base point plus one factor changed at a time."""
    base = {"batch": args.base_batch, "image": args.base_image, "gts": args.base_gts}
    out = []
    for factor, key, values in (
        ("batch", "batch", args.batches),
        ("anchors", "image", args.images),
        ("gts", "gts", args.gts),
    ):
        for value in sorted(set(values) | {base[key]}):
            out.append({"factor": factor, **base, key: value})
    return out


def _spec(point: dict, args) -> wl.WorkloadSpec:
    size = point["image"]
    return wl.WorkloadSpec(
        f"scaling{size}",
        (size, size),
        STRIDES,
        max_gt=args.max_gt,
        num_gt=max(*args.gts, args.base_gts),
    )


def first_gts(work: wl.Workload, count: int) -> wl.Workload:
    """``work`` with only the first ``count`` gts of every image kept (the rest padding).

    The gts points of a factor are nested this way: one draw, more or fewer of
    its gts labelled (the head outputs stay those of the full draw, as for
    unlabelled objects), so that the gt count is the only thing that changes.
    """
    keep = np.arange(work.gt_mask.shape[1]) < count
    mask = work.gt_mask & keep
    return dataclasses.replace(
        work,
        gt_boxes=np.where(mask[..., None], work.gt_boxes, 0.0).astype(np.float32),
        gt_labels=np.where(mask, work.gt_labels, 0).astype(np.int32),
        gt_mask=mask,
    )


def _call(assigner: str, work: wl.Workload):
    config = assign_bench.configs()[assigner][0]
    return harness.blocking(assign_bench.jax_call(assigner, work.to_jax(), config))


def fit_slope(xs, ys) -> float:
    """Least-squares slope of log(y) against log(x) (nan with fewer than 2 distinct x)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(set(xs.tolist())) < 2:
        return math.nan
    slope, _ = np.polyfit(np.log(xs), np.log(ys), 1)
    return float(slope)


def _x(row: dict) -> int:
    return {"batch": row["batch"], "anchors": row["num_anchors"], "gts": row["gts"]}[row["factor"]]


def run(args) -> dict:
    import jax

    device = jax.devices()[0]
    name, slug = harness.device_name_and_slug(device)
    load_before = harness.load_average()
    calls: dict[tuple, object] = {}
    info = []
    for point in points(args):
        spec = _spec(point, args)
        work = first_gts(wl.make_workload(spec, point["batch"], seed=args.seed), point["gts"])
        for assigner in args.assigners:
            key = (assigner, point["batch"], point["image"], point["gts"])
            if key not in calls:
                calls[key] = _call(assigner, work)
            extra = {"num_anchors": work.num_anchors, "max_gt": args.max_gt}
            extra["mean_gt"] = float(work.gt_mask.sum(axis=1).mean())
            info.append((key, {**point, "assigner": assigner, **extra}))
    timings = harness.time_calls(
        calls, repeats=args.repeats, warmup=args.warmup, label="[scaling] "
    )
    times = {
        key: {"median_ms": t.median_ms, "ms_all": t.times_ms, "first_call_ms": t.first_ms}
        for key, t in timings.items()
    }
    rows = [{**row, **times[key]} for key, row in info]
    slopes = {
        assigner: {
            factor: fit_slope(
                [_x(r) for r in rows if r["assigner"] == assigner and r["factor"] == factor],
                [
                    r["median_ms"]
                    for r in rows
                    if r["assigner"] == assigner and r["factor"] == factor
                ],
            )
            for factor in FACTORS
        }
        for assigner in args.assigners
    }
    return {
        **harness.report_header(name, slug, device, load_before),
        "settings": {
            "quick": args.quick,
            "base": {"batch": args.base_batch, "image": args.base_image, "gts": args.base_gts},
            "batches": list(args.batches),
            "images": list(args.images),
            "gts": list(args.gts),
            "max_gt": args.max_gt,
            "strides": list(STRIDES),
            "repeats": args.repeats,
            "warmup": args.warmup,
            "seed": args.seed,
            "timing": "median of repeats (rounds over all points) after the first call and "
            "warm-up; block_until_ready",
            "slope": "least-squares slope of log(median ms) vs log(batch | anchors | gts)",
        },
        "results": rows,
        "slopes": slopes,
    }


def _fmt_slope(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}"


def markdown_table(report: dict) -> str:
    assigners = list(report["slopes"])
    lines = [
        "| factor | batch | image | anchors | gts | " + " | ".join(assigners) + " |",
        "|---|---|---|---|---|" + "---|" * len(assigners),
    ]
    by_point: dict[tuple, dict] = {}
    for row in report["results"]:
        key = (row["factor"], row["batch"], row["image"], row["num_anchors"], row["gts"])
        by_point.setdefault(key, {})[row["assigner"]] = row["median_ms"]
    for key, times in by_point.items():
        cells = [str(v) for v in key] + [harness.fmt_ms(times.get(a)) for a in assigners]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| fitted exponent (log-log slope) | " + " | ".join(assigners) + " |",
        "|---|" + "---|" * len(assigners),
    ]
    for factor in FACTORS:
        slopes = [_fmt_slope(report["slopes"][a][factor]) for a in assigners]
        lines.append(f"| {factor} | " + " | ".join(slopes) + " |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    return f"{harness.markdown_header(report)}\n\n{markdown_table(report)}\n"


def main(argv=None) -> dict:
    args = parse_args(argv)
    report = run(args)
    out = Path(args.out or harness.default_out("scaling", report["device_slug"], args.quick))
    markdown = Path(args.markdown) if args.markdown else out.with_suffix(".md")
    # Strict JSON: a slope that cannot be fitted is written as null.
    clean = harness.write_report(out, report, markdown_report(report), markdown)
    print(markdown_table(report))
    print(f"\n{report['device']}; JSON: {out}; markdown: {markdown}")
    return clean


if __name__ == "__main__":
    main()
