"""Every GPU measurement docs/performance.md quotes, in one command for a machine held for minutes.

A GPU is often lent for a quarter of an hour, start and transfers included, so
this runs the measurements in order of what they decide, each in its own
process under its own time limit (a slow step cannot starve the next), and
leaves what each step finished in ``--out-dir`` even when a later one fails:

1. ``alone``: OTA and SimOTA on yolox640 and fcos1024, each assigner in a
   process without the loops (`benchmarks.bucket_ablation`), the GPU targets of docs/performance.md.
2. ``assign``: the assignment tables against the PyTorch loops, crowded images
   and memory included (`suite.py`), the "On a GPU" tables of docs/performance.md.
3. ``train_step``: the assignment's share of an FCOS-R50 bfloat16 train step
   (`train_step_bench.py`); its compile with XLA's autotuning takes about three
   minutes on an H200, so it has a step of its own.

``--steps trace`` (not run by default, to keep the whole under 9 minutes) adds a
profiler trace of OTA on yolox640 (`trace_assign.py`): its kernels and the
device's idle gaps inside a call.

Files in ``--out-dir``: ``buckets.{json,md}``, ``suite/suite.{json,md}``,
``train_step.{json,md}``, ``trace_ota.json`` and ``gpu_run.log`` (every step's
output). ``--quick`` runs the same steps at smoke-test sizes (on a CPU too; the
times mean nothing).

Example::

    python -m benchmarks.gpu_run --out-dir /tmp/gpu_run
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import harness


@dataclasses.dataclass(frozen=True)
class Step:
    """One script run: ``name``, its time limit, the module run with ``python -m`` and its
    arguments, in which ``{out}`` is the output folder, ``{tmp}`` a scratch folder and
    ``{device}`` the device; ``quick_args`` replace ``args`` under ``--quick``, and
    ``outputs`` (where the script writes) follow either."""

    name: str
    seconds: int
    module: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    outputs: tuple[str, ...]
    keep: tuple[tuple[str, str], ...] = ()  # (scratch file, output name) copied after the run


# Limits from runs on an H200 (benchmarks/results/nvidia-h200, 14ede45): `alone`
# took 66 s, the suite's assignment tables 174 s, the train step 184 s in a process
# of its own, the trace 20 s.
STEPS: tuple[Step, ...] = (
    Step(
        "alone",
        90,
        "benchmarks.bucket_ablation",
        ("--variants", "auto", "--repeats", "30"),
        ("--quick", "--workloads", "tiny320", "--variants", "auto"),
        ("--out", "{out}/buckets.json"),
    ),
    Step(
        "assign",
        210,
        "benchmarks.suite",
        (
            "--device", "{device}", "--steps", "assign", "--torch-budget-s", "8",
            "--assign-args", "--assigners ota,simota --memory inline",
        ),
        ("--quick", "--device", "{device}", "--steps", "assign"),
        ("--out-dir", "{out}/suite"),
    ),
    Step(
        "train_step",
        240,
        "benchmarks.train_step_bench",
        ("--dtype", "bfloat16", "--repeats", "3"),
        ("--quick",),
        ("--out", "{out}/train_step.json"),
    ),
    Step(
        "trace",
        50,
        "benchmarks.trace_assign",
        ("--assigner", "ota", "--workload", "yolox640", "--calls", "5"),
        ("--assigner", "ota", "--workload", "tiny320", "--calls", "1", "--batch", "2"),
        ("--out-dir", "{tmp}/trace"),
        keep=(("trace/summary.json", "trace_ota.json"),),
    ),
)  # fmt: skip
DEFAULT_STEPS = ("alone", "assign", "train_step")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", required=True, help="where every step's files go")
    parser.add_argument(
        "--device",
        default="cuda",
        choices=("cuda", "gpu", "cpu", "auto"),
        help="the suite's device; cpu also hides any GPU from every step (JAX_PLATFORMS=cpu)",
    )
    parser.add_argument(
        "--steps",
        default=",".join(DEFAULT_STEPS),
        help="comma list of " + ",".join(s.name for s in STEPS),
    )
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes, for a CPU too")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = set(names) - {s.name for s in STEPS}
    if not names or unknown:
        parser.error(f"--steps must be among {[s.name for s in STEPS]}, got {args.steps!r}")
    args.steps = [s for s in STEPS if s.name in names]
    return args


def command(step: Step, *, out: Path, tmp: Path, device: str, quick: bool) -> list[str]:
    """The step's command line, placeholders filled in."""
    fill = {"out": str(out), "tmp": str(tmp), "device": device}
    args = (*(step.quick_args if quick else step.args), *step.outputs)
    return [sys.executable, "-m", step.module, *(a.format(**fill) for a in args)]


def run(args: argparse.Namespace) -> dict[str, int]:
    """Runs the chosen steps; returns each one's exit status (124: out of time)."""
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    status = {}
    # Only the suite takes a device argument; the other steps use JAX's default
    # device, which is a GPU wherever there is one.
    # The repository root on PYTHONPATH: ``-m benchmarks.<name>`` from any directory.
    _, env = harness.module_command("suite")
    if args.device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    with tempfile.TemporaryDirectory() as scratch, open(out / "gpu_run.log", "a") as log:
        tmp = Path(scratch)
        for step in args.steps:
            cmd = command(step, out=out, tmp=tmp, device=args.device, quick=args.quick)
            # Quoted, so that a logged command can be pasted back into a shell.
            line = shlex.join(cmd)
            print(f"[gpu_run] {step.name} (at most {step.seconds} s): {line}", flush=True)
            log.write(f"\n$ {line}\n")
            log.flush()
            start = time.perf_counter()
            status[step.name] = _run_limited(cmd, log, step.seconds, env)
            for source, name in step.keep:
                if (tmp / source).exists():
                    shutil.copyfile(tmp / source, out / name)
            seconds = time.perf_counter() - start
            print(f"[gpu_run] {step.name}: exit {status[step.name]}, {seconds:.0f} s", flush=True)
    return status


def _run_limited(cmd: list[str], log, seconds: float, env: dict | None = None) -> int:
    """Runs ``cmd`` (in ``env``, default this process's) with its output to ``log``;
    past ``seconds`` its whole process group is killed (`bucket_ablation.py` times
    each variant in a child process) and the status is 124, as ``timeout``'s."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return 124


def main(argv=None) -> int:
    status = run(parse_args(argv))
    return 0 if all(code == 0 for code in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
