"""The whole benchmark suite on one device, in one command: one JSON, one markdown report.

On whatever device JAX has (``--device``) it runs, through the scripts' own
``run`` functions:

1. ``assign_bench``: every assigner of ``ota_jax.assigners.ASSIGNERS`` on each
   workload of BENCHMARKS.md (yolox640, fcos1024, crowd100) and the crowded ones
   (crowd500, crowd1000), batch 16, against the PyTorch loops (OTA, SimOTA)
   within ``--torch-budget-s`` per loop and workload;
2. ``scaling``: batch, anchor and gt sweeps of OTA and SimOTA;
3. ``train_step_bench``: the assignment's share of an FCOS train step, FCOS-R50
   at 800x1344, batch 16 on a GPU; the tiny FCOS at 128x128, batch 8 on a CPU.

It writes ``suite.json`` (the run header of ``harness``, the settings, each step's time
and the three reports) and ``suite.md`` (their tables, each under a line naming
the device) to ``--out-dir`` (default ``benchmarks/results/<device-slug>/``;
``--quick``: ``benchmarks/results/<device-slug>-quick/``), after every step:
``"complete": false`` until the last, so that a run that dies keeps what it
finished. ``--quick`` runs
every part at smoke-test sizes with XLA's optimisations off (compilation is
most of a tiny run): about a minute on a 2-core CPU, and its times mean nothing.

Examples::

    python -m benchmarks.suite                     # the full suite (hours on a 2-core CPU)
    python -m benchmarks.suite --quick --out-dir /tmp/suite
    python -m benchmarks.suite --device cuda --steps assign --assign-args "--assigners ota,simota"
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from . import assign_bench, harness, scaling, train_step_bench
from . import workloads as wl

STEPS = ("assign", "scaling", "train_step")
WORKLOADS = (*wl.DEFAULT_WORKLOADS, "crowd500", "crowd1000")
QUICK_WORKLOADS = (*wl.QUICK_WORKLOADS, "tinycrowd")
# train_step_bench's default is the GPU setting; on a CPU the tiny model of docs/performance.md.
TRAIN_STEP_CPU = ("--preset", "tiny", "--image-size", "128", "128", "--batch", "8")


class Progress:
    """One line per step on stderr: ``[suite 3/7, 42 s] assign crowd100``; keeps step times."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.start = self.step_start = time.perf_counter()
        self.label: str | None = None
        self.seconds: dict[str, float] = {}

    def step(self, label: str | None) -> None:
        now = time.perf_counter()
        if self.label is not None:
            self.seconds[self.label] = round(now - self.step_start, 1)
            harness.log(f"[suite] {self.label}: {self.seconds[self.label]:.0f} s")
        self.label, self.step_start = label, now
        if label is not None:
            self.done += 1
            harness.log(f"[suite {self.done}/{self.total}, {now - self.start:.0f} s] {label}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke-test sizes (about a minute on 2 CPU cores)"
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "gpu"))
    parser.add_argument("--steps", default=",".join(STEPS), help="comma list of " + ",".join(STEPS))
    parser.add_argument(
        "--workloads",
        default=None,
        help="assign_bench workloads ("
        + ",".join(WORKLOADS)
        + "; quick: "
        + ",".join(QUICK_WORKLOADS)
        + ")",
    )
    parser.add_argument(
        "--torch-budget-s",
        type=float,
        default=120.0,
        help="assign_bench's time budget of one torch loop on one workload (120; 0: none)",
    )
    for step in STEPS:
        parser.add_argument(
            f"--{step.replace('_', '-')}-args",
            default="",
            help=f'more arguments for the {step} step\'s script, e.g. "--repeats 3"',
        )
    parser.add_argument(
        "--out-dir",
        default=None,
        help="where suite.json and suite.md go (benchmarks/results/<device>[-quick]/)",
    )
    args = parser.parse_args(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if not args.steps or set(args.steps) - set(STEPS):
        parser.error(f"--steps must be among {STEPS}")
    args.workloads = args.workloads or ",".join(QUICK_WORKLOADS if args.quick else WORKLOADS)
    return args


def step_args(args, step: str, cpu: bool) -> list[str]:
    """The command-line arguments the suite gives one step's script."""
    quick = ["--quick"] if args.quick else []
    extra = shlex.split(getattr(args, f"{step}_args"))
    if step == "assign":
        common = ["--device", args.device, "--torch-budget-s", str(args.torch_budget_s)]
        return [*quick, "--workloads", args.workloads, *common, *extra]
    if step == "train_step" and cpu and not args.quick:
        return [*TRAIN_STEP_CPU, *extra]
    return [*quick, *extra]


def run(args, checkpoint: Callable[[dict], None] | None = None) -> dict:
    """Runs the suite of ``args`` (from `parse_args`); ``checkpoint(report)`` is
    called with the report so far after every step, ``"complete": False`` until
    the last."""
    import jax

    if args.device == "cpu":
        jax.config.update("jax_platforms", "cpu")
    if args.quick:  # tiny shapes: XLA's optimisation passes cost more than they save
        jax.config.update("jax_disable_most_optimizations", True)
    devices = assign_bench.pick_devices(args.device)
    cpu = devices.jax_device.platform == "cpu"
    load_before = harness.load_average()
    scripts = {"assign": assign_bench, "scaling": scaling, "train_step": train_step_bench}
    parsed = {s: scripts[s].parse_args(step_args(args, s, cpu)) for s in args.steps}
    num_workloads = len(parsed["assign"].workloads) if "assign" in parsed else 0
    progress = Progress(len(args.steps) + max(num_workloads - 1, 0))
    reports = {}

    def report(complete: bool) -> dict:
        seconds = dict(progress.seconds)
        if progress.label is not None:  # a checkpoint: the step just run is still the label
            seconds[progress.label] = round(time.perf_counter() - progress.step_start, 1)
        return {
            "benchmark": "suite",
            "complete": complete,
            **harness.report_header(
                devices.name,
                devices.slug,
                devices.jax_device,
                load_before,
                "torch",
                "flax",
                "optax",
            ),
            "settings": {
                "quick": args.quick,
                "xla_optimizations": not args.quick,
                "steps": args.steps,
                "step_args": {s: step_args(args, s, cpu) for s in args.steps},
            },
            "seconds": {**seconds, "total": round(time.perf_counter() - progress.start, 1)},
            **reports,
        }

    for step, step_parsed in parsed.items():
        if step == "assign":
            reports[step] = assign_bench.run(step_parsed, lambda w: progress.step(f"assign {w}"))
        else:
            progress.step(step)
            reports[step] = scripts[step].run(step_parsed)
        jax.clear_caches()  # each step compiles its own shapes
        if checkpoint is not None and step != args.steps[-1]:
            checkpoint(report(complete=False))
    progress.step(None)
    return report(complete=True)


def markdown_report(report: dict) -> str:
    so_far = "" if report.get("complete", True) else " (incomplete: the steps run so far)"
    parts = [
        f"# Benchmark suite on {report['device']}{so_far}",
        f"{harness.markdown_header(report)}; {report['seconds']['total']:.0f} s in all",
    ]
    titles = {
        "assign": ("Assignment, ota_jax vs PyTorch loops", assign_bench),
        "scaling": ("How the cost grows (JAX)", scaling),
        "train_step": ("Assignment share of an FCOS train step", train_step_bench),
    }
    for step, (title, script) in titles.items():
        if step in report:
            parts.append(f"## {title} (`{Path(script.__file__).name}`)")
            parts.append(script.markdown_report(report[step]))
    return "\n\n".join(p.strip() for p in parts) + "\n"


def main(argv=None) -> dict:
    args = parse_args(argv)

    def write(report: dict) -> dict:
        slug = report["device_slug"] + ("-quick" if args.quick else "")
        out = Path(args.out_dir) if args.out_dir else harness.RESULTS / slug
        written = harness.write_report(out / "suite.json", report, markdown_report(report))
        state = "" if report["complete"] else " (so far)"
        harness.log(f"[suite] wrote {out / 'suite.json'} and {out / 'suite.md'}{state}")
        return written

    report = write(run(args, checkpoint=write))
    print(markdown_report(report))
    return report


if __name__ == "__main__":
    main()
