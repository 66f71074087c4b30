r"""``ota-study``: the same FCOS trained with each assigner, same data, budget and seeds.

The default compares OTA, SimOTA, FCOS and ATSS on ``ota_shapes/coco_like`` (COCO's
object-size shares, P3-P7) and ``ota_shapes/crowd`` (crowded, overlapping): the
settings of OTA's claims. ``dataset_settings`` sets their image size, levels and gt
slots. Besides AP, the report gives AP, AP50 and positives / gt by object size
(``SIZE_BUCKETS`` and COCO's S/M/L, see ``size_metrics``) and time per step.

Every (dataset, assigner, seed) run is an ordinary ``ota-train`` run of the
``--config`` (default ``configs/study.py``) in ``<workdir>/<dataset>/<assigner>/seed<k>``;
only ``dataset.name``, ``loss.assigner`` and ``seed`` change between runs. The
report, ``study.md`` (tables of mean +- std over seeds), ``study.png`` (AP per
assigner) and ``study.json`` (every run), is written after each run, so it is
current while the study goes on. A killed study resumes where it stopped:
finished runs are read back, an interrupted one resumes from its checkpoint.

Examples::

    ota-study --workdir runs/study                  # 4 assigners x 2 datasets x 3 seeds
    ota-study --workdir runs/voc --datasets voc/2007 --assigners ota,atss \
        --config.dataset.data_dir=/data/tfds --config.train.steps=20000
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

from absl import app, flags
from ml_collections import config_flags

from ota_train import configs

__all__ = ["Run", "main", "summarise"]

DEFAULT_DATASETS = ("ota_shapes/coco_like", "ota_shapes/crowd")
DEFAULT_ASSIGNERS = ("ota", "simota", "fcos", "atss")
DEFAULT_SEEDS = (0, 1, 2)
# Levels of the ota_shapes variants that need more than the config's: P3-P7, as COCO's
# FCOS and OTA, for objects sized like COCO's relative to the strides.
SHAPES_STRIDES: dict[str, tuple[int, ...]] = {"coco_like": (8, 16, 32, 64, 128)}
# Object-size buckets of the report, sqrt(area) in original pixels.
SIZE_BUCKETS = {
    "<12": (0.0, 12.0),
    "12-16": (12.0, 16.0),
    "16-24": (16.0, 24.0),
    "24-32": (24.0, 32.0),
    "32+": (32.0, 1e5),
}
RESULT_FILE = "study_run.json"
# The report's columns: (key in a run's result, header, digits).
COLUMNS = (
    ("AP", "AP", 3),
    ("AP50", "AP50", 3),
    ("APs", "APs (< 32 px)", 3),  # pycocotools' absolute limit, not the S column's
    ("pos_per_gt", "positives / gt", 1),
    ("assign_ms", "assignment ms / batch", 1),
    ("step_ms", "ms / training step", 1),
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the study."""

    dataset: str
    assigner: str
    seed: int

    def workdir(self, root: str) -> str:
        return os.path.join(root, self.dataset.replace("/", "-"), self.assigner, f"seed{self.seed}")


def run_config(base, run: Run):
    """``base`` with this run's dataset, assigner and seed."""
    config = base.copy_and_resolve_references()
    with config.unlocked():
        config.dataset.name = run.dataset
        config.loss.assigner = run.assigner
        config.seed = run.seed
        config.update_from_flattened_dict(dataset_settings(run.dataset))
    return config


def _shapes_config(dataset: str):
    """The ``OtaShapesConfig`` of an ``ota_shapes[/name]`` registry name."""
    from ota_jax.data import shapes

    name = dataset.split("/", 1)[1] if "/" in dataset else "default"
    return shapes.OtaShapes.builder_configs[name]


def dataset_settings(dataset: str) -> dict[str, Any]:
    """Settings over the ``--config`` for ``dataset``: an ``ota_shapes`` variant trains at
    its own image size, with gt slots for its most objects (a multiple of 8) and the
    levels of ``SHAPES_STRIDES``; other datasets train with the config as it is."""
    if not dataset.startswith("ota_shapes"):
        return {}
    config = _shapes_config(dataset)
    settings = {
        "dataset.image_size": (config.image_size, config.image_size),
        "dataset.max_gt": 8 * math.ceil(config.max_objects / 8),
    }
    if config.name in SHAPES_STRIDES:
        settings["model.overrides.strides"] = SHAPES_STRIDES[config.name]
    return settings


def coco_size_ranges(dataset: str) -> dict[str, tuple[float, float]]:
    """COCO's S/M/L in ``sqrt(area)`` pixels of ``dataset``'s images: relative to the
    strides for ``ota_shapes`` (``ota_jax.data.shapes.COCO_STRIDE_LIMITS``, COCO's 32
    and 96 at its training scale); COCO's own 32 and 96 otherwise."""
    from ota_jax.data import shapes

    small, large = shapes.COCO_SIZE_LIMITS
    if dataset.startswith("ota_shapes"):
        small, large = shapes.COCO_STRIDE_LIMITS
    return {"S": (0.0, small), "M": (small, large), "L": (large, 1e5)}


def size_ranges(dataset: str) -> dict[str, tuple[float, float]]:
    """The report's buckets: ``SIZE_BUCKETS`` and COCO's S/M/L (``coco_size_ranges``)."""
    return {**SIZE_BUCKETS, **coco_size_ranges(dataset)}


def step_ms(records: Sequence[Mapping]) -> float:
    """Median training step time in milliseconds from the logged ``train/steps_per_sec``
    of a run's ``records`` (the first, which holds the compilation, left out when there
    are others)."""
    rates = [r["train/steps_per_sec"] for r in records if "train/steps_per_sec" in r]
    rates = rates[1:] or rates
    return 1e3 / statistics.median(rates) if rates else float("nan")


def positives_per_gt(records: Sequence[Mapping], *, last_fraction: float = 0.25) -> float:
    """Mean positives per gt over the last quarter of the run's logged training steps
    (the dynamic assigners give more labels as the predictions improve)."""
    records = [r for r in records if "train/pos_per_gt" in r]
    if not records:
        return float("nan")
    last_step = records[-1]["step"]
    tail = [r for r in records if r["step"] > (1 - last_fraction) * last_step] or records[-1:]
    return statistics.fmean(r["train/pos_per_gt"] for r in tail)


def learning_curve(records: Sequence[Mapping]) -> list[tuple[int, float]]:
    """``[(step, AP)]`` of the run's evaluations (``train.eval_every`` and the last step)."""
    return [(r["step"], r["eval/AP"]) for r in records if "eval/AP" in r]


def _trained_state(config, workdir: str):
    """The run's final train state (its newest checkpoint)."""
    from ota_train import trainer
    from ota_train.checkpoints import Checkpoints
    from ota_train.trainer import CHECKPOINT_DIR

    mesh = trainer.make_data_mesh()
    state = trainer.create_state(config, mesh)
    checkpoints = Checkpoints(os.path.join(workdir, CHECKPOINT_DIR), max_to_keep=1)
    try:
        state = checkpoints.restore(state)
    finally:
        checkpoints.close()
    return state


def size_metrics(config, state) -> dict[str, float]:
    """One pass over the evaluation split with the trained ``state``: COCO ``AP_<bucket>``
    and ``AP50_<bucket>`` for every bucket of ``size_ranges`` (gt ``area`` as COCO reads
    it), and ``pos_per_gt_<bucket>``, the positives the run's assigner gives each gt of
    that size (``sqrt`` of its box area in original pixels) given the trained model's
    predictions; NaN for a bucket without gts."""
    import jax
    import numpy as np

    from ota_jax.detector import postprocess
    from ota_jax.detector.losses import assign_targets
    from ota_jax.evaluation import CocoEvaluator
    from ota_train import builders, input_data

    ranges = size_ranges(config.dataset.name)
    evaluator = CocoEvaluator.from_dataset(
        config.dataset.name, config.dataset.eval_split, data_dir=config.dataset.data_dir
    )
    postprocess_config = builders.postprocess_config(config)

    @jax.jit
    def detect_and_assign(state, images, gts):
        """`eval_step`'s detections and the assigner's gt per anchor, one forward pass."""
        model = state.model()
        outputs = model(images)
        image_size = tuple(images.shape[1:3])
        detections = postprocess(outputs, config=postprocess_config, image_size=image_size)
        points, strides = model.anchors(image_size)
        assignment = assign_targets(outputs, points, strides, gts, config=state.loss_config)
        return detections, assignment.gt_index

    positives = {label: [] for label in ranges}
    for batch in input_data.eval_batches(config):
        gts = {key: batch[key] for key in ("gt_boxes", "gt_labels", "gt_mask")}
        detections, gt_index = jax.device_get(detect_and_assign(state, batch["image"], gts))
        evaluator.add_batch(
            batch, detections.boxes, detections.scores, detections.classes, detections.valid
        )
        num_gt = batch["gt_mask"].shape[1]
        counts = (gt_index[:, :, None] == np.arange(num_gt)).sum(axis=1)  # [B, M]
        boxes = np.asarray(batch["gt_boxes"], np.float64)
        scale = np.sqrt(np.prod(np.asarray(batch["scale"], np.float64), axis=-1))[:, None]
        sizes = np.sqrt(np.prod(np.clip(boxes[..., 2:] - boxes[..., :2], 0, None), -1)) / scale
        real = np.asarray(batch["gt_mask"], bool) & np.asarray(batch["valid"], bool)[:, None]
        for label, (low, high) in ranges.items():
            positives[label] += counts[real & (sizes >= low) & (sizes < high)].tolist()
    metrics = evaluator.evaluate(ranges)
    by_size = {key: metrics[key] for label in ranges for key in (f"AP_{label}", f"AP50_{label}")}
    for label, values in positives.items():
        by_size[f"pos_per_gt_{label}"] = float(np.mean(values)) if values else float("nan")
        by_size[f"num_gt_{label}"] = len(values)
    return by_size


def assignment_ms(config, state, *, repeats: int = 20) -> float:
    """Median wall time of the assigner on one training batch with the trained
    ``state``'s predictions, compiled, in milliseconds."""
    import jax
    import numpy as np

    from ota_jax.detector.losses import assign_targets
    from ota_train import input_data

    batch = next(input_data.train_batches(config))
    images = jax.numpy.asarray(batch["image"])
    model = state.model()
    outputs = jax.jit(lambda s, x: s.model()(x))(state, images)
    points, strides = model.anchors(tuple(images.shape[1:3]))
    assign = jax.jit(partial(assign_targets, config=state.loss_config))
    gts = {key: batch[key] for key in ("gt_boxes", "gt_labels", "gt_mask")}
    jax.block_until_ready(assign(outputs, points, strides, gts))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(assign(outputs, points, strides, gts))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def run_once(base, run: Run, root: str) -> dict:
    """Train and evaluate ``run`` (or read its finished result back)."""
    from ota_train import trainer
    from ota_train.metrics_writer import read_metrics

    workdir = run.workdir(root)
    path = os.path.join(workdir, RESULT_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    config = run_config(base, run)
    start = time.perf_counter()
    try:
        metrics = trainer.train_and_evaluate(config, workdir)
    except trainer.NonFiniteLossError as error:
        # A diverged run is a result of the study too: NaN metrics, the others go on.
        logger.warning("%s diverged: %s", run, error)
        metrics = {key: float("nan") for key, _, _ in COLUMNS[:3]}
        metrics["error"] = str(error)
    records = read_metrics(workdir)
    state = _trained_state(config, workdir)
    result = {
        **dataclasses.asdict(run),
        **metrics,
        "pos_per_gt": positives_per_gt(records),
        "assign_ms": assignment_ms(config, state),
        "step_ms": step_ms(records),
        "curve": learning_curve(records),
        **size_metrics(config, state),
        "train_seconds": time.perf_counter() - start,
    }
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    return result


def _mean_std(values: Sequence[float], digits: int) -> str:
    """``mean ± sample std`` (``mean`` alone for one value)."""
    if any(math.isnan(v) for v in values):  # A diverged run, or a bucket without gts.
        return "n/a"
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summarise(results: Sequence[Mapping]) -> str:
    """Markdown tables, one per dataset: each assigner's mean ± std over its seeds."""
    lines = []
    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    for dataset in datasets:
        rows = [r for r in results if r["dataset"] == dataset]
        assigners = list(dict.fromkeys(r["assigner"] for r in rows))
        seeds = sorted({r["seed"] for r in rows})
        lines += [
            f"**{dataset}** (seeds {', '.join(map(str, seeds))}; mean ± std over seeds)",
            "",
            "| assigner | " + " | ".join(header for _, header, _ in COLUMNS) + " |",
            "|---|" + "---:|" * len(COLUMNS),
        ]
        for assigner in assigners:
            runs = [r for r in rows if r["assigner"] == assigner]
            cells = [_mean_std([r[key] for r in runs], digits) for key, _, digits in COLUMNS]
            lines.append(f"| {assigner} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += _curve_table(rows, assigners)
        lines += _size_tables(rows, assigners)
    return "\n".join(lines)


def _mean_curves(rows: Sequence[Mapping], assigners: Sequence[str]) -> tuple[list[int], dict]:
    """The evaluation steps every run has, and each assigner's mean AP at them."""
    curves = [dict(map(tuple, r.get("curve", []))) for r in rows]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    means = {}
    for assigner in assigners:
        runs = [c for c, r in zip(curves, rows, strict=True) if r["assigner"] == assigner]
        means[assigner] = [statistics.fmean(c[step] for c in runs) for step in steps]
    return steps, means


def _curve_table(rows: Sequence[Mapping], assigners: Sequence[str]) -> list[str]:
    """AP at each evaluation during training (mean over seeds) and the assigners ranked
    by it: whether the ranking has settled by the end of the budget."""
    steps, means = _mean_curves(rows, assigners)
    if len(steps) < 2:
        return []
    lines = [
        "AP during training (mean over seeds) and the ranking at each evaluation",
        "",
        "| assigner | " + " | ".join(f"step {step}" for step in steps) + " |",
        "|---|" + "---:|" * len(steps),
    ]
    for assigner in assigners:
        lines.append(f"| {assigner} | " + " | ".join(f"{v:.3f}" for v in means[assigner]) + " |")
    rankings = [
        " > ".join(sorted(assigners, key=lambda a, i=i: -means[a][i])) for i in range(len(steps))
    ]
    lines += ["| ranking | " + " | ".join(rankings) + " |", ""]
    return lines


def _size_labels(rows: Sequence[Mapping]) -> list[str]:
    """The size buckets the runs of one dataset were scored on, in report order."""
    return [key[len("AP50_") :] for key in rows[0] if key.startswith("AP50_")]


def _size_tables(rows: Sequence[Mapping], assigners: Sequence[str]) -> list[str]:
    """AP, AP50 and positives / gt by object size (``sqrt(area)`` pixels), one row per
    assigner; empty for runs scored without size buckets."""
    labels = _size_labels(rows)
    if not labels:
        return []
    counts = ", ".join(f"{label}: {rows[0].get(f'num_gt_{label}', '?')}" for label in labels)
    lines = [f"By object size, sqrt(area) in pixels (validation gts: {counts})", ""]
    for prefix, title, digits in (
        ("AP_", "AP", 3),
        ("AP50_", "AP50", 3),
        ("pos_per_gt_", "positives / gt", 1),
    ):
        lines += [
            f"| {title} | " + " | ".join(labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        for assigner in assigners:
            runs = [r for r in rows if r["assigner"] == assigner]
            cells = [_mean_std([r[prefix + label] for r in runs], digits) for label in labels]
            lines.append(f"| {assigner} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def plot(results: Sequence[Mapping], path: str) -> None:
    """``path``: AP of each assigner per dataset, mean with std bars and every seed's dot."""
    import numpy as np
    from matplotlib.figure import Figure

    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    figure = Figure(figsize=(4.5 * len(datasets), 10.8), layout="constrained")
    axes, curve_axes, size_axes = figure.subplots(3, len(datasets), squeeze=False)
    for ax, dataset in zip(curve_axes, datasets, strict=True):
        rows = [r for r in results if r["dataset"] == dataset]
        assigners = list(dict.fromkeys(r["assigner"] for r in rows))
        steps, means = _mean_curves(rows, assigners)
        for assigner in assigners:
            ax.plot(steps, means[assigner], "o-", markersize=3, label=assigner)
        ax.set_xlabel("training step")
        ax.set_ylabel("AP (val), mean over seeds")
        ax.legend(fontsize=7)
    for ax, dataset in zip(size_axes, datasets, strict=True):
        rows = [r for r in results if r["dataset"] == dataset]
        labels = _size_labels(rows)
        if not labels:
            ax.set_axis_off()
            continue
        assigners = list(dict.fromkeys(r["assigner"] for r in rows))
        width = 0.8 / len(assigners)
        for i, assigner in enumerate(assigners):
            runs = [r for r in rows if r["assigner"] == assigner]
            values = np.array([[r["AP_" + label] for label in labels] for r in runs])
            stds = values.std(axis=0, ddof=1) if len(runs) > 1 else None
            x = np.arange(len(labels)) + (i - (len(assigners) - 1) / 2) * width
            ax.bar(x, values.mean(axis=0), width, yerr=stds, capsize=2, label=assigner)
        ax.set_xticks(np.arange(len(labels)), labels, rotation=30)
        ax.set_xlabel("object size, sqrt(area) px (S/M/L: COCO's relative to strides)")
        ax.set_ylabel("AP by size (val)")
        ax.legend(fontsize=7, ncols=2)
    for ax, dataset in zip(axes, datasets, strict=True):
        rows = [r for r in results if r["dataset"] == dataset]
        assigners = list(dict.fromkeys(r["assigner"] for r in rows))
        values = [[r["AP"] for r in rows if r["assigner"] == a] for a in assigners]
        x = np.arange(len(assigners))
        means = [np.mean(v) for v in values]
        stds = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
        ax.bar(x, means, yerr=stds, color="#8fb3d9", capsize=3)
        for i, v in enumerate(values):
            ax.plot(np.full(len(v), x[i]), v, "o", color="#1f3b5c", markersize=3)
        ax.set_xticks(x, assigners, rotation=30)
        ax.set_title(dataset)
        ax.set_ylabel("COCO AP (val)")
    figure.savefig(path, dpi=120)


def write_report(results: Sequence[Mapping], root: str, command: str, seconds: float) -> None:
    """``study.json``, ``study.md`` and ``study.png`` in ``root``."""
    import jax

    with open(os.path.join(root, "study.json"), "w") as f:
        json.dump(list(results), f, indent=2)
    device = f"{jax.devices()[0].device_kind} ({jax.device_count()}x, {platform.machine()})"
    header = (
        f"Command: `{command}`  \n"
        f"Device: {device}, {os.cpu_count()} CPU cores; {len(results)} runs, "
        f"{seconds / 60:.0f} min of training and evaluation.  \n"
        "Positives / gt: mean over the last quarter of training; assignment time: one "
        "training batch with the trained model, median of 20 compiled calls; ms / training "
        "step: median of the logged rates. By size: AP buckets gts by sqrt(visible area), "
        "positives / gt by sqrt(box area), in original pixels; S/M/L are COCO's 32 and 96 at "
        "its 800-pixel training scale, 53 and 160 px, for ota_shapes (the same limits "
        "relative to the strides); positives / gt by size: the run's assigner on the "
        "validation images with the trained model.\n"
    )
    with open(os.path.join(root, "study.md"), "w") as f:
        f.write(header + "\n" + summarise(results))
    plot(results, os.path.join(root, "study.png"))


class _Flags(NamedTuple):
    config: Any
    workdir: Any
    assigners: Any
    datasets: Any
    seeds: Any
    compilation_cache: Any


def _define_flags() -> _Flags:
    """The command's flags, defined when it runs: ``ota_train.main`` defines its own
    ``--config``, and a process may import both modules (the tests do)."""
    return _Flags(
        config=config_flags.DEFINE_config_file(
            "config",
            default=str(configs.CONFIG_DIR / "study.py"),
            help_string=f"Training config of every run: a name of {configs.available()} or a path.",
            lock_config=True,
        ),
        workdir=flags.DEFINE_string("workdir", "runs/study", "Study directory; reruns resume."),
        assigners=flags.DEFINE_list(
            "assigners",
            list(DEFAULT_ASSIGNERS),
            "Assigners to compare (names in ota_jax.assigners).",
        ),
        datasets=flags.DEFINE_list("datasets", list(DEFAULT_DATASETS), "Registry names."),
        seeds=flags.DEFINE_list("seeds", [str(s) for s in DEFAULT_SEEDS], "Seeds of each setting."),
        compilation_cache=flags.DEFINE_string(
            "compilation_cache",
            None,
            "JAX's persistent compilation cache directory, as for ota-train; '' turns it off.",
        ),
    )


def _runs(options: _Flags) -> list[Run]:
    from ota_jax.assigners import ASSIGNERS

    assigners = options.assigners.value or list(ASSIGNERS)
    unknown = sorted(set(assigners) - set(ASSIGNERS))
    if unknown:
        raise app.UsageError(f"--assigners: unknown {unknown}; known: {list(ASSIGNERS)}")
    try:
        seeds = [int(seed) for seed in options.seeds.value]
    except ValueError:
        raise app.UsageError(f"--seeds must be integers, got {options.seeds.value}") from None
    # Assigners innermost: a partial study already compares all of them on its seeds.
    return [
        Run(dataset, assigner, seed)
        for dataset in options.datasets.value
        for seed in seeds
        for assigner in assigners
    ]


def _run(argv: Sequence[str], options: _Flags, command: str) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {list(argv[1:])}")
    from tqdm.auto import tqdm

    from ota_jax.data.registry import DatasetNotPreparedError
    from ota_train import compilation_cache
    from ota_train.builders import ConfigError

    compilation_cache.enable(options.compilation_cache.value)
    logging.getLogger("ota_train").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file it renames.
    root = os.path.abspath(options.workdir.value)
    os.makedirs(root, exist_ok=True)
    runs = _runs(options)
    results, start = [], time.perf_counter()
    seconds = 0.0
    for run in tqdm(runs, desc="study", unit="run"):
        logger.info("Study run %s", run)
        try:
            result = run_once(options.config.value, run, root)
        except (DatasetNotPreparedError, ConfigError) as error:
            raise SystemExit(f"ota-study: {run}: {error}") from None
        results.append(result)
        seconds += result["train_seconds"]
        write_report(results, root, command, seconds)
    logger.info("Study done in %.0f s: %s", time.perf_counter() - start, root)
    print(summarise(results))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``ota-study`` console script."""
    argv = sys.argv if argv is None else list(argv)
    command = " ".join(["ota-study", *argv[1:]])  # As typed, for the report.
    try:
        argv = configs.resolve_config_argv(argv)
    except FileNotFoundError as error:
        raise SystemExit(f"ota-study: {error}") from None
    sys.argv = argv  # ml_collections reads the --config.* overrides from sys.argv itself.
    app.run(partial(_run, options=_define_flags(), command=command), argv=argv)


if __name__ == "__main__":
    main()
