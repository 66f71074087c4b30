r"""``ota-study``: the same FCOS trained with each assigner, same data, budget and seeds.

Every (dataset, assigner, seed) run is an ordinary ``ota-train`` run of the
``--config`` (default ``configs/study.py``) in ``<workdir>/<dataset>/<assigner>/seed<k>``;
only ``dataset.name``, ``loss.assigner`` and ``seed`` change between runs. The
report, ``study.md`` (tables of mean +- std over seeds), ``study.png`` (AP per
assigner) and ``study.json`` (every run), is written after each run, so it is
current while the study goes on. A killed study resumes where it stopped:
finished runs are read back, an interrupted one resumes from its checkpoint.

Examples::

    ota-study --workdir runs/study                  # 7 assigners x 2 datasets x 3 seeds
    ota-study --workdir runs/voc --datasets voc/2007 --assigners ota,atss \
        --config.dataset.data_dir=/data/tfds --config.train.steps=20000
"""

from __future__ import annotations

import dataclasses
import json
import logging
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

DEFAULT_DATASETS = ("ota_shapes", "ota_shapes/crowded")
DEFAULT_SEEDS = (0, 1, 2)
RESULT_FILE = "study_run.json"
# The report's columns: (key in a run's result, header, digits).
COLUMNS = (
    ("AP", "AP", 3),
    ("AP50", "AP50", 3),
    ("APs", "APs", 3),
    ("pos_per_gt", "positives / gt", 1),
    ("assign_ms", "assignment ms / batch", 1),
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
    return config


def positives_per_gt(workdir: str, *, last_fraction: float = 0.25) -> float:
    """Mean positives per gt over the last quarter of the run's logged training steps
    (the dynamic assigners give more labels as the predictions improve)."""
    from ota_train.metrics_writer import read_metrics

    records = [r for r in read_metrics(workdir) if "train/pos_per_gt" in r]
    if not records:
        return float("nan")
    last_step = records[-1]["step"]
    tail = [r for r in records if r["step"] > (1 - last_fraction) * last_step] or records[-1:]
    return statistics.fmean(r["train/pos_per_gt"] for r in tail)


def assignment_ms(config, workdir: str, *, repeats: int = 20) -> float:
    """Median wall time of the assigner on one training batch with the trained model's
    predictions (the run's final checkpoint), compiled, in milliseconds."""
    import jax
    import numpy as np

    from ota_jax.detector.losses import assign_targets
    from ota_train import input_data, trainer
    from ota_train.checkpoints import Checkpoints
    from ota_train.trainer import CHECKPOINT_DIR

    mesh = trainer.make_data_mesh()
    state = trainer.create_state(config, mesh)
    checkpoints = Checkpoints(os.path.join(workdir, CHECKPOINT_DIR), max_to_keep=1)
    try:
        state = checkpoints.restore(state)
    finally:
        checkpoints.close()
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
    result = {
        **dataclasses.asdict(run),
        **metrics,
        "pos_per_gt": positives_per_gt(workdir),
        "assign_ms": assignment_ms(config, workdir),
        "train_seconds": time.perf_counter() - start,
    }
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    return result


def _mean_std(values: Sequence[float], digits: int) -> str:
    """``mean ± sample std`` (``mean`` alone for one value)."""
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
    return "\n".join(lines)


def plot(results: Sequence[Mapping], path: str) -> None:
    """``path``: AP of each assigner per dataset, mean with std bars and every seed's dot."""
    import numpy as np
    from matplotlib.figure import Figure

    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    figure = Figure(figsize=(4.5 * len(datasets), 3.6), layout="constrained")
    axes = figure.subplots(1, len(datasets), squeeze=False)[0]
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
        "training batch with the trained model, median of 20 compiled calls.\n"
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
            "assigners", None, "Assigners to compare (default: every one in ota_jax.assigners)."
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
