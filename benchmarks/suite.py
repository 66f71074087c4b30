"""The benchmarks in one command: a preset of steps, each in its own process under a time limit.

A step runs one benchmark as ``python -m benchmarks.<name>`` in a process of its
own (a fresh JAX: nothing another step compiled or allocated) under a time
limit: past it, the step's whole process group is killed and the step is
recorded as timed out; a step that exits with an error is recorded as failed.
Either way the next step runs. After every step the suite writes
``suite.json`` (the run header, the settings, each step's status, seconds and
command, and each step's own report under the step's name) and ``suite.md`` (a
table of the steps, then each step's report under its title) to ``--out-dir``
(default ``benchmarks/results/<device>/``; ``--quick``:
``benchmarks/results/<device>-quick/``), with each step's own report beside them
and every step's output in ``suite.log``. ``"complete": true`` once every step
has run and succeeded; the command then exits 0.

Presets (``--preset``):

* ``cpu`` (the default), the whole suite, hours on a 2-core CPU:

  1. ``assign`` (`assign_bench`): every assigner of ``ota_jax.assigners.ASSIGNERS``
     on BENCHMARKS.md's workloads (yolox640, fcos1024, crowd100) and the crowded
     ones (crowd500, crowd1000), batch 16, against the PyTorch loops (OTA,
     SimOTA) within ``--torch-budget-s`` per loop and workload;
  2. ``scaling``: batch, anchor and gt sweeps of OTA and SimOTA;
  3. ``train_step`` (`train_step_bench`): the assignment's share of a train step
     of the tiny FCOS at 128x128, batch 8.

* ``gpu``, the GPU runbook: every GPU measurement docs/performance.md quotes, in the
  order of what they decide, for a GPU lent for a quarter of an hour, start and
  transfers included (the default steps' limits add up to 9 minutes):

  1. ``alone`` (`bucket_ablation`): OTA and SimOTA on yolox640 and fcos1024, each
     assigner in a process without the loops: the GPU targets;
  2. ``assign``: the assignment tables against the PyTorch loops (OTA and
     SimOTA, crowded images and memory included, 8 s of loop per workload): the
     "On a GPU" tables;
  3. ``train_step``: the assignment's share of an FCOS-R50 bfloat16 train step
     at 800x1344, batch 16 (its compile with XLA's autotuning takes about three
     minutes on an H200, hence a step of its own);
  4. ``trace`` (only when ``--steps`` names it): a profiler trace of OTA on
     yolox640 (`trace_assign`), its kernels and the device's idle gaps.

``--quick`` runs a preset's steps at smoke-test sizes with XLA's optimisations
off (compilation is most of a tiny run): minutes on a 2-core CPU, and the times
mean nothing.

Examples::

    python -m benchmarks.suite --quick --out-dir /tmp/suite
    python -m benchmarks.suite --device cpu                # hours on a 2-core CPU
    python -m benchmarks.suite --preset gpu --out-dir /tmp/gpu_run
    python -m benchmarks.suite --steps assign --assign-args "--assigners ota,simota"
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import harness

TIMED_OUT = 124  # the exit status of a step past its limit, as ``timeout``'s


@dataclasses.dataclass(frozen=True)
class Step:
    """One benchmark run: ``name``; its ``title`` in the report; the ``module`` run with
    ``python -m``; its time limit ``limit_s`` (``quick_limit_s`` under ``--quick``); its
    arguments ``args`` (``quick_args`` under ``--quick``), in which ``{out}`` is the
    output folder, ``{tmp}`` a scratch folder and ``{device}`` the suite's ``--device``;
    and ``report`` (by keyword, every step has one), the JSON file it writes in the
    output folder (``--out`` is added), which the suite's report holds under the step's
    name."""

    name: str
    title: str
    module: str
    limit_s: float
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ("--quick",)
    report: str = dataclasses.field(kw_only=True)
    quick_limit_s: float = 600


WORKLOADS = "yolox640,fcos1024,crowd100,crowd500,crowd1000"
QUICK_WORKLOADS = "tiny320,tinycrowd"
_ASSIGN = "Assignment, ota_jax vs PyTorch loops"
_TRAIN_STEP = "Assignment share of an FCOS train step"

# The CPU suite's limits: on 2 cores its steps took 675 s (the first three workloads),
# 191 s and 45 s (results/cpu-2core). The GPU runbook's: on an H200 (14ede45) `alone`
# took 66 s, the assignment tables 174 s, the train step 184 s, the trace 20 s.
PRESETS: dict[str, tuple[Step, ...]] = {
    "cpu": (
        Step(
            "assign", _ASSIGN, "benchmarks.assign_bench", 4 * 3600,
            ("--device", "{device}", "--workloads", WORKLOADS, "--torch-budget-s", "120"),
            ("--quick", "--device", "{device}", "--workloads", QUICK_WORKLOADS),
            report="assign.json",
        ),
        Step("scaling", "How the cost grows (JAX)", "benchmarks.scaling", 3600,
             report="scaling.json"),
        Step(
            "train_step", _TRAIN_STEP, "benchmarks.train_step_bench", 1800,
            ("--preset", "tiny", "--image-size", "128", "128", "--batch", "8"),
            report="train_step.json",
        ),
    ),
    "gpu": (
        Step(
            "alone", "Each assigner alone, in a process without the loops",
            "benchmarks.bucket_ablation", 90,
            ("--variants", "auto", "--repeats", "30"),
            ("--quick", "--workloads", "tiny320", "--variants", "auto"),
            report="buckets.json",
        ),
        Step(
            "assign", _ASSIGN, "benchmarks.assign_bench", 210,
            (
                "--device", "{device}", "--workloads", WORKLOADS, "--torch-budget-s", "8",
                "--assigners", "ota,simota", "--memory", "inline",
            ),
            ("--quick", "--device", "{device}", "--workloads", QUICK_WORKLOADS,
             "--assigners", "ota,simota"),
            report="assign.json",
        ),
        Step(
            "train_step", _TRAIN_STEP, "benchmarks.train_step_bench", 240,
            ("--dtype", "bfloat16", "--repeats", "3"),
            report="train_step.json",
        ),
        Step(
            "trace", "Where OTA's time goes: a profiler trace", "benchmarks.trace_assign", 50,
            ("--assigner", "ota", "--workload", "yolox640", "--calls", "5",
             "--out-dir", "{tmp}/trace"),
            ("--assigner", "ota", "--workload", "tiny320", "--calls", "1", "--batch", "2",
             "--out-dir", "{tmp}/trace"),
            report="trace_ota.json",
        ),
    ),
}  # fmt: skip
DEFAULT_STEPS = {
    "cpu": ("assign", "scaling", "train_step"),
    "gpu": ("alone", "assign", "train_step"),
}
_NAMES = tuple(dict.fromkeys(step.name for steps in PRESETS.values() for step in steps))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument(
        "--quick", action="store_true", help="smoke-test sizes, XLA's optimisations off"
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda", "gpu"),
        help="assign_bench's device; cpu also hides any GPU from every step (JAX_PLATFORMS=cpu)",
    )
    parser.add_argument(
        "--steps",
        default=None,
        help="comma list of the preset's steps ("
        + "; ".join(f"{p}: {','.join(s.name for s in PRESETS[p])}" for p in PRESETS)
        + "), run in the preset's order (default: "
        + "; ".join(f"{p}: {','.join(names)}" for p, names in DEFAULT_STEPS.items())
        + ")",
    )
    parser.add_argument(
        "--workloads", default=None, help=f"the assign step's workloads ({WORKLOADS})"
    )
    parser.add_argument(
        "--torch-budget-s",
        type=float,
        default=None,
        help="the assign step's time budget of one torch loop on one workload (0: none)",
    )
    for name in _NAMES:
        parser.add_argument(
            f"--{name.replace('_', '-')}-args",
            default="",
            help=f'more arguments for the {name} step, e.g. "--repeats 3"',
        )
    parser.add_argument(
        "--out-dir",
        default=None,
        help="where the reports go (benchmarks/results/<device>[-quick]/)",
    )
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    names = [s.strip() for s in (args.steps or ",".join(DEFAULT_STEPS[args.preset])).split(",")]
    unknown = set(names) - {step.name for step in preset}
    if not names or unknown:
        parser.error(f"--steps must be among {[s.name for s in preset]}, got {args.steps!r}")
    args.steps = [step for step in preset if step.name in names]
    return args


def step_args(args: argparse.Namespace, step: Step, *, out: Path, tmp: Path) -> list[str]:
    """The arguments the suite gives ``step``'s module: the preset's, then the suite's
    ``--workloads`` and ``--torch-budget-s`` (for assign_bench), then ``--<step>-args``,
    then ``--out`` for its report."""
    fill = {"out": str(out), "tmp": str(tmp), "device": args.device}
    argv = [arg.format(**fill) for arg in (step.quick_args if args.quick else step.args)]
    if step.module == "benchmarks.assign_bench":
        if args.workloads:
            argv += ["--workloads", args.workloads]
        if args.torch_budget_s is not None:
            argv += ["--torch-budget-s", str(args.torch_budget_s)]
    argv += shlex.split(getattr(args, f"{step.name}_args", ""))
    return [*argv, "--out", str(out / step.report)]


def run_limited(cmd: list[str], log, seconds: float, env: dict | None = None) -> tuple[int, bool]:
    """Runs ``cmd`` (in ``env``, default this process's) with its output to ``log``;
    returns its exit status and whether it ran out of time: past ``seconds`` its whole
    process group is killed (a step may have children: `bucket_ablation` times each
    variant in one) and the status is `TIMED_OUT`."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=seconds), False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # it may end on its own meanwhile
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return TIMED_OUT, True


def _stamp(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def _tail(path: Path, offset: int, lines: int = 20) -> str:
    """The last ``lines`` lines written to ``path`` after ``offset``."""
    with open(path, "rb") as f:
        f.seek(offset)
        return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])


def run(args: argparse.Namespace) -> tuple[dict, str]:
    """Runs the steps of ``args`` (from `parse_args`), writing the suite's report after
    every step; returns the last one written and its markdown."""
    import jax

    device = jax.devices("cpu" if args.device == "cpu" else None)[0]
    name, slug = harness.device_name_and_slug(device)
    out = Path(args.out_dir or harness.RESULTS / f"{slug}{'-quick' if args.quick else ''}")
    out.mkdir(parents=True, exist_ok=True)
    env = harness.child_env()
    if args.device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    if args.quick:  # tiny shapes: XLA's optimisation passes cost more than they save
        env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "true"
    load_before = harness.load_average()
    start = time.perf_counter()
    steps, reports, sections = {}, {}, {}

    def write() -> tuple[dict, str]:
        done = len(steps) == len(args.steps)
        report = {
            "benchmark": "suite",
            "complete": done and all(s["status"] == "ok" for s in steps.values()),
            **harness.report_header(name, slug, device, load_before, "torch", "flax", "optax"),
            "settings": {
                "preset": args.preset,
                "quick": args.quick,
                "xla_optimizations": not args.quick,
                "steps": [step.name for step in args.steps],
                "step_args": {s: entry["args"] for s, entry in steps.items()},
            },
            "seconds": {
                **{s: entry["seconds"] for s, entry in steps.items()},
                "total": round(time.perf_counter() - start, 1),
            },
            "steps": {s: {k: v for k, v in e.items() if k != "args"} for s, e in steps.items()},
            **reports,
        }
        markdown = markdown_report(report, args.steps, sections)
        report = harness.write_report(out / "suite.json", report, markdown)
        harness.log(f"[suite] wrote {out / 'suite.json'} and {out / 'suite.md'}")
        return report, markdown

    with tempfile.TemporaryDirectory() as scratch, open(out / "suite.log", "a") as log:
        for step in args.steps:
            argv = step_args(args, step, out=out, tmp=Path(scratch))
            cmd = [sys.executable, "-m", step.module, *argv]
            limit = step.quick_limit_s if args.quick else step.limit_s
            line = shlex.join(cmd)  # quoted: pasted into a shell, the same command
            harness.log(f"[suite] {step.name} (at most {limit:.0f} s): {line}")
            log.write(f"\n$ {line}\n")
            log.flush()
            offset = log.tell()
            path = out / step.report
            before = _stamp(path)
            began = time.perf_counter()
            code, timed_out = run_limited(cmd, log, limit, env)
            seconds = round(time.perf_counter() - began, 1)
            status = "timed out" if timed_out else "ok" if code == 0 else "failed"
            entry = {"status": status, "exit": code, "seconds": seconds, "limit_s": limit}
            entry |= {"command": line, "args": argv}
            if status != "ok":
                entry["output_tail"] = _tail(out / "suite.log", offset)
            if _stamp(path) not in (None, before):  # written by this run
                try:
                    reports[step.name] = json.loads(path.read_text())
                    sections[step.name] = path.with_suffix(".md").read_text()
                except (OSError, ValueError) as error:
                    entry["report_error"] = f"{type(error).__name__}: {error}"
            steps[step.name] = entry
            harness.log(f"[suite] {step.name}: {status} (exit {code}), {seconds:.0f} s")
            written = write()
    return written


def markdown_report(report: dict, steps: list[Step], sections: dict[str, str]) -> str:
    """The title, a table of the steps, then each step's own report (its ``.md``) under its
    title, or the end of its output where it did not succeed."""
    ran = report["steps"]
    trouble = [
        f"{name} {entry['status']}" for name, entry in ran.items() if entry["status"] != "ok"
    ]
    if len(ran) < len(steps):
        trouble.append("steps still to run")
    so_far = f" (incomplete: {', '.join(trouble)})" if trouble else ""
    quick = ", quick" if report["settings"]["quick"] else ""
    parts = [
        f"# Benchmark suite on {report['device']}{so_far}",
        f"{harness.markdown_header(report)}; preset {report['settings']['preset']}{quick}; "
        f"{report['seconds']['total']:.0f} s in all",
        "\n".join(
            [
                "| step | status | seconds | limit (s) |",
                "|---|---|---|---|",
                *(
                    f"| {step.name} | {ran[step.name]['status']} | "
                    f"{ran[step.name]['seconds']:.0f} | {ran[step.name]['limit_s']:.0f} |"
                    if step.name in ran
                    else f"| {step.name} | not run yet | | |"
                    for step in steps
                ),
            ]
        ),
    ]
    for step in steps:
        entry = ran.get(step.name)
        if entry is None:
            continue
        parts.append(f"## {step.title} (`python -m {step.module}`)")
        if step.name in sections:
            parts.append(sections[step.name])
        if entry["status"] != "ok":
            tail = entry.get("output_tail", "")
            parts.append(f"{entry['status']} (exit {entry['exit']}); its output ended:")
            parts.append(f"```\n{tail}\n```")
    return "\n\n".join(p.strip() for p in parts) + "\n"


def main(argv=None) -> dict:
    report, markdown = run(parse_args(argv))
    print(markdown)
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["complete"] else 1)
