"""What every benchmark shares: its timing loop, its run header and its report writer.

* Timing (`time_calls`): the first call (tracing, compilation, one run) timed apart,
  untimed warm-up calls, then the median of repeated calls, each ended by
  ``block_until_ready`` (`blocking`) or the caller's own synchronisation.
* The run header (`report_header`): device, versions, commit, date, load, command.
* Reports (`write_report`, `default_out`): ``<name>.json`` (strict JSON) and
  ``<name>.md`` in ``benchmarks/results/<device>/``; read back by `loop_rows` (for
  plot_speedups and docs/make_tables.py). `fmt_ms`, `fmt_number` and `fmt_bytes`
  format the times and sizes of docs/make_tables.py's tables and of the assign,
  scaling and train-step reports' (bucket_ablation and compile_bench write bare
  numbers under ``ms`` and ``s`` headers).
* Children (`run_child`): ``python -m benchmarks.<name>`` in a fresh process, which
  prints its result as one line of JSON (`print_result`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path

# The benchmarks run JAX and PyTorch side by side on one GPU and measure peaks: JAX
# must not take 75% of the GPU's memory up front (set before any script imports jax).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

_ROOT = Path(__file__).resolve().parent.parent
RESULTS = _ROOT / "benchmarks" / "results"

# --------------------------------------------------------------------------- timing


@dataclasses.dataclass
class Timing:
    """What `time_calls` measured of one call: ``first_ms`` and ``first_cpu_s`` (wall
    milliseconds and CPU seconds of all threads of the first call: tracing, compilation
    and one run), ``times_ms`` (the timed calls) and, when kept, the first call's
    ``result``."""

    first_ms: float = math.nan
    first_cpu_s: float = math.nan
    times_ms: list[float] = dataclasses.field(default_factory=list)
    result: object = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)


def blocking(call: Callable[[], object]) -> Callable[[], object]:
    """``call`` ended by ``jax.block_until_ready`` on its result."""
    import jax

    return lambda: jax.block_until_ready(call())


def _name(key) -> str:
    return " ".join(map(str, key)) if isinstance(key, tuple) else str(key)


def time_calls(
    calls: Mapping[Hashable, Callable[[], object]],
    *,
    repeats: int | Mapping[Hashable, int],
    warmup: int = 0,
    keep_first: bool = False,
    label: str = "",
) -> dict[Hashable, Timing]:
    """Times zero-argument calls, each of which returns once its work is done (wrap a
    JAX call in `blocking`).

    Every call runs once (timed apart: compilation) and ``warmup`` more times untimed;
    then rounds interleave the calls, so that a change of machine load hits all of
    them alike: ``repeats`` timed calls each (an int, or one per key), a call with more
    repeats than the fewest spread evenly over the rounds. A timed call's result is
    released before the next call starts, as by a caller that consumes it; the first
    call's is kept as ``result`` if ``keep_first``. Progress goes to stderr, each line
    starting with ``label``.
    """
    counts = {key: repeats if isinstance(repeats, int) else repeats[key] for key in calls}
    timings = {key: Timing() for key in calls}
    for key, call in calls.items():
        log(f"{label}{_name(key)}: first call and {warmup} warm-up ...")
        start, start_cpu = time.perf_counter(), time.process_time()
        result = call()
        timings[key].first_ms = (time.perf_counter() - start) * 1e3
        timings[key].first_cpu_s = time.process_time() - start_cpu
        timings[key].result = result if keep_first else None
        del result
        for _ in range(warmup):
            call()
    rounds = min(counts.values(), default=0)
    for r in range(rounds):
        for key, call in calls.items():
            # This round's share of the call's repeats.
            share = (r + 1) * counts[key] // rounds - r * counts[key] // rounds
            for _ in range(share):
                start = time.perf_counter()
                call()
                timings[key].times_ms.append((time.perf_counter() - start) * 1e3)
        medians = ", ".join(f"{_name(k)} {t.median_ms:.3g} ms" for k, t in timings.items())
        log(f"{label}round {r + 1}/{rounds}" + (f": {medians}" if len(calls) <= 4 else ""))
    return timings


def fmt_number(value: float) -> str:
    """About three significant digits, no exponent: ``2085``, ``27.6``, ``5.90``, ``0.464``."""
    for digits, above in ((0, 100), (1, 10), (2, 1)):
        if abs(value) >= above:
            return f"{value:.{digits}f}"
    return f"{value:.3f}"


def fmt_ms(value: float | None) -> str:
    """A time given in ms, for a table cell: ``27.6 ms``, from 1000 ms in seconds
    (``2.09 s``); ``n/a`` for none."""
    if value is None:
        return "n/a"
    return f"{fmt_number(value / 1000)} s" if value >= 1000 else f"{fmt_number(value)} ms"


def fmt_bytes(n: float | None) -> str:
    """Bytes as MiB or GiB; ``n/a`` for nothing measured, ``—`` for too little to register."""
    if n is None:
        return "n/a"
    if n <= 0:
        return "—"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


# --------------------------------------------------------------------------- reading reports


def loop_rows(reports: Mapping[str, dict], order: Sequence[str] = ()) -> dict[tuple, dict]:
    """``(workload, assigner) -> row`` of every row timed against a PyTorch loop (with a
    ``speedup``) in ``reports`` (name -> an `assign_bench` report, alone or as a suite's
    ``assign`` step), workloads in ``order`` (others after it, by name). A pair in two
    reports is an error: which one counts would be a guess."""
    rows: dict[tuple, dict] = {}
    where: dict[tuple, str] = {}
    for name, report in reports.items():
        for row in report.get("assign", report)["results"]:
            key = row["workload"], row["assigner"]
            if not row.get("speedup"):
                continue
            if key in rows:
                raise ValueError(f"{key} is in both {where[key]} and {name}")
            rows[key], where[key] = row, name
    workloads = in_order((workload for workload, _ in rows), order)
    return dict(sorted(rows.items(), key=lambda item: workloads.index(item[0][0])))


def in_order(workloads: Iterable[str], order: Sequence[str]) -> list[str]:
    """``workloads`` once each: those in ``order`` in its order, then the others by name."""
    rank = lambda w: (order.index(w) if w in order else len(order), w)
    return sorted(dict.fromkeys(workloads), key=rank)


# --------------------------------------------------------------------------- the run header


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def device_name_and_slug(device) -> tuple[str, str]:
    """A readable name of a JAX device and a file-name slug (``cpu-2core``, ``nvidia-h100-...``)."""
    if device.platform == "cpu":
        cores = os.cpu_count() or 1
        return f"{cpu_name()} ({cores} cores)", f"cpu-{cores}core"
    name = device.device_kind
    slug = "-".join(
        filter(None, "".join(c if c.isalnum() else "-" for c in name.lower()).split("-"))
    )
    return name, slug


def versions(*optional: str) -> dict:
    """Python, NumPy, JAX, jaxlib, ott-jax and ota_jax versions, plus ``optional`` modules
    (e.g. ``"torch"``) that are installed."""
    out = {"python": platform.python_version()}
    for module in ("numpy", "jax", "jaxlib", "ott", "ota_jax", *optional):
        with contextlib.suppress(ImportError):
            key = "ott-jax" if module == "ott" else module
            out[key] = getattr(importlib.import_module(module), "__version__", None)
    return out


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the repository, else the ``GIT_COMMIT`` environment
    variable (for a copy of the tree without ``.git``, as CI systems set it)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True, check=False
        )
        if proc.returncode == 0:
            return proc.stdout.strip()
    return os.environ.get("GIT_COMMIT") or None


def git_dirty() -> bool | None:
    """Whether a tracked file differs from the commit `git_commit` names (None without
    ``git``). Reports under ``benchmarks/results`` do not count: a run rewrites them.

    A report's commit alone can name code that did not run: a copy of the tree sent
    to a device machine once ran with ``.git`` at an older commit than its files."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
             ":(exclude)benchmarks/results"],
            cwd=_ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode == 0:
            return bool(proc.stdout.strip())
    return None


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default this process's environment) with the repository root first on
    ``PYTHONPATH``: a child imports ``benchmarks`` and ``ota_jax`` from the tree this
    process runs, whatever its working directory."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(_ROOT), env.get("PYTHONPATH"))))
    return env


def module_command(module: str, *args: str, env=None) -> tuple[list[str], dict]:
    """The command line running ``python -m benchmarks.<module> args`` with this
    interpreter, and its environment (`child_env` of ``env``)."""
    return [sys.executable, "-m", f"benchmarks.{module}", *args], child_env(env)


def child_args(args, *keys: str) -> list[str]:
    """``--key value`` for each of ``keys`` of the parsed ``args`` (``_`` as ``-``), and
    ``--quick`` where set: the arguments a parent passes on to its child."""
    argv = [
        word for key in keys for word in (f"--{key.replace('_', '-')}", str(getattr(args, key)))
    ]
    return argv + (["--quick"] if getattr(args, "quick", False) else [])


def run_child(module: str, *args: str, env: Mapping[str, str] | None = None) -> dict:
    """Runs ``python -m benchmarks.<module> args`` in a fresh process (`module_command`)
    and returns what it printed with `print_result`; RuntimeError with the end of its
    output if it failed or printed none."""
    cmd, env = module_command(module, *args, env=env)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    # The last line only: a library may print to stdout before it.
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise RuntimeError(f"{module} {shlex.join(args)} failed:\n{tail}")
    return json.loads(lines[-1])


def print_result(result: dict) -> None:
    """What a child gives `run_child`: one line of JSON on stdout."""
    print(json.dumps(result), flush=True)


def load_average() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report_header(name: str, slug: str, device, load_before, *optional_versions: str) -> dict:
    """The fields every benchmark JSON starts with; call it when the run is over."""
    return {
        "device": name,
        "device_slug": slug,
        "jax_device": str(device),
        "jax_backend": device.platform,
        "cpu_count": os.cpu_count(),
        "versions": versions(*optional_versions),
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        # Quoted: pasted into a shell, the same arguments (``--assign-args "--repeats 3"``).
        "command": " ".join([_program(), *map(shlex.quote, sys.argv[1:])]),
    }


def _program() -> str:
    """How this process was started: ``python -m benchmarks.<name>``, else the script's name."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is not None and spec.name.startswith("benchmarks."):
        return f"python -m {spec.name}"
    return Path(sys.argv[0]).name


def markdown_header(report: dict) -> str:
    """One line naming the device, date, commit and command of a report."""
    commit = report.get("git_commit")
    commit = commit[:12] if commit else "unknown"
    if report.get("git_dirty"):
        commit += " (files changed since)"
    return f"{report['device']}; {report['date']}; commit {commit}; `{report['command']}`"


# --------------------------------------------------------------------------- reports


def default_out(name: str, slug: str, quick: bool) -> Path:
    """``benchmarks/results/<slug>/<name>.json``, where every report of one device lives;
    ``--quick`` runs get ``_quick`` appended, so that a smoke run never overwrites a
    real result."""
    return RESULTS / slug / f"{name}{'_quick' if quick else ''}.json"


def _strict(value):
    """``value`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def write_report(path, report: dict, markdown: str | None = None, markdown_path=None) -> dict:
    """Writes ``report`` as strict JSON to ``path`` (atomically, NaN/inf as null) and
    ``markdown``, if given, to ``markdown_path`` (default: ``path`` with the suffix ``.md``).
    Returns what was written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = _strict(report)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(clean, indent=2, default=str) + "\n")
    tmp.replace(path)
    if markdown is not None:
        markdown_path = Path(markdown_path or path.with_suffix(".md"))
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(markdown)
    return clean
