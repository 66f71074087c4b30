"""Benchmark: ota_jax's batched assigners against the PyTorch reference loops.

For each workload (see ``workloads.py``) and every assigner registered in
``ota_jax.assigners.ASSIGNERS`` (read at run time; ``--assigners`` picks some)
this times the assigner's batched function and, for OTA and SimOTA, the
per-image PyTorch loops of ``torch_loops.py`` on the same inputs, checks that
they assign the same anchors, and measures peak memory. The other assigners
have no PyTorch loop: their rows have ota_jax's time and memory only ("—" in
the table). It prints a markdown table and writes everything to JSON, and the
table (under a line naming the device, date, commit and command) to markdown
next to it (``--markdown``).

Torch time budget (``--torch-budget-s``, per loop and workload; 0: none): a
warm call of the loop on the batch's first image estimates its time per image; the
loop is then timed on the first ``n`` images (at least one), the most for
which its warm-up and timed calls fit in the budget. ``torch_ms`` is then the
median over ``n`` images scaled to the batch by ``B / n`` (``torch_ms_measured``
is as measured), the table's "torch images" column says ``n/B``, and agreement
and the loop's peak memory are over those ``n`` images (a per-image loop's
peak does not grow with ``n``). With COCO-like gt counts the first images may
not be typical: the scaled time is an estimate.

Timing (`harness.time_calls`): the first call, which compiles for JAX, reported
apart; then the median of ``--repeats`` JAX calls and of ``--torch-repeats`` loop
calls, each ended by ``block_until_ready`` or ``torch.cuda.synchronize``,
interleaved in rounds so that a change of machine load hits both sides alike,
and each result released before the next call (why:
docs/performance_history.md#on-a-gpu-h100). The JSON records the load average
before and after the run.

Agreement: over the anchors the PyTorch loop makes positive (``gt_index >= 0``),
the fraction where ota_jax picks the same gt; both sides get the hyperparameters
of ``OTAConfig()`` / ``SimOTAConfig()``. For OTA the JSON also holds the agreement
with the loop whose gt rows are shifted by their minimum cost (ASSIGNERS.md, OTA
step 5), computed once, untimed.

Peak memory of one call beyond what was in use before it (``--memory``):
``subprocess`` (the default) in a fresh process per side and assigner, so that
nothing an earlier run left behind hides it; ``inline`` (the ``--quick`` default)
in this process, quicker, and on a CPU it may under-report; ``none``.

* GPU: PyTorch, ``torch.cuda.max_memory_allocated`` after a reset, minus the
  memory allocated before a warm call; JAX, ``memory_stats()``'s
  ``peak_bytes_in_use`` minus ``bytes_in_use`` before the fresh process's first
  call (inputs excluded, compilation included: the counter cannot be reset).
  Inline, JAX reports XLA's ``memory_analysis()`` (temp + output) instead.
* CPU: the resident-set high-water mark (``VmHWM``, reset through
  ``/proc/self/clear_refs``) minus the resident set before a warm JAX call, or the
  fresh process's first PyTorch call; a fresh process pins glibc's mmap threshold
  at 256 KiB, so that the resident set follows live memory.
* JAX on any backend, also: XLA's compile-time ``memory_analysis()`` temp bytes.

Examples::

    python -m benchmarks.assign_bench                       # the three BENCHMARKS.md workloads
    python -m benchmarks.assign_bench --quick --out /tmp/q.json
    python -m benchmarks.assign_bench --workloads crowd500 --batch 4 --skip-torch
    python -m benchmarks.assign_bench --assigners ota,simota --torch-budget-s 30
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import ota_jax

from . import harness
from . import workloads as wl

# The assigners with a PyTorch reference loop in torch_loops.py, and those whose
# cost uses objectness (YOLOX's head has it; the others' heads do not).
TORCH_LOOPS = ("ota", "simota")
_USES_OBJECTNESS = ("simota",)
ARG_KEYS = ("pred_boxes", "cls_logits", "points", "strides", "gt_boxes", "gt_labels", "gt_mask")
# Rough bytes per [M, A, C] float32 element alive at the peak of each loop,
# measured on CPU (used only to skip loops that would not fit).
_TORCH_BYTES_PER_MAC = {"ota": 4 * 7, "simota": 4 * 5}


# --------------------------------------------------------------------------- devices


@dataclasses.dataclass
class Devices:
    kind: str  # "cpu" or "cuda" (the PyTorch side)
    torch_device: str
    jax_device: object
    name: str
    slug: str


def pick_devices(requested: str) -> Devices:
    import jax

    want_gpu = requested in ("auto", "cuda", "gpu")
    torch_cuda = False
    if want_gpu:
        with contextlib.suppress(ImportError):
            import torch

            torch_cuda = torch.cuda.is_available()
    if requested in ("cuda", "gpu") and not torch_cuda:
        raise SystemExit("--device cuda: PyTorch sees no CUDA device")
    if requested == "cpu":
        jax_device = jax.devices("cpu")[0]
    else:
        jax_device = jax.devices()[0]
        if requested in ("cuda", "gpu") and jax_device.platform != "gpu":
            raise SystemExit("--device cuda: JAX sees no GPU")
    name, slug = harness.device_name_and_slug(jax_device)
    if torch_cuda:
        import torch

        name = torch.cuda.get_device_name(0)
    kind = "cuda" if torch_cuda else "cpu"
    return Devices(kind, "cuda:0" if torch_cuda else "cpu", jax_device, name, slug)


# --------------------------------------------------------------------------- runners


def registered() -> dict:
    """``ota_jax.assigners.ASSIGNERS``, as it is now (helpers keep adding to it)."""
    from ota_jax.assigners import ASSIGNERS

    return ASSIGNERS


def _jax_args(assigner: str, arrays: dict, config) -> tuple[tuple, dict]:
    kwargs = {"config": config}
    if assigner in _USES_OBJECTNESS:
        kwargs["obj_logits"] = arrays["obj_logits"]
    return tuple(arrays[key] for key in ARG_KEYS), kwargs


def jax_call(assigner: str, arrays: dict, config) -> Callable[[], object]:
    fn = registered()[assigner].assign_batch
    args, kwargs = _jax_args(assigner, arrays, config)
    return lambda: fn(*args, **kwargs)


def _torch_call(assigner: str, tensors: dict, kwargs: dict) -> Callable[[], object]:
    from . import torch_loops

    args = tuple(tensors[key] for key in ARG_KEYS)
    if assigner == "ota":
        return lambda: torch_loops.ota_loop(*args, **kwargs)
    return lambda: torch_loops.simota_loop(*args, tensors["obj_logits"], **kwargs)


def configs(simota_variant: str = "2023") -> dict:
    """Per registered assigner: its JAX config and the keyword arguments of the matching
    torch loop (None for an assigner without one). Default configs, except SimOTA's
    ``--simota-variant 2021`` (the 2021 YOLOX head's prior)."""
    out = {name: (spec.config_class(), None) for name, spec in registered().items()}
    ota_cfg = ota_jax.OTAConfig()
    if simota_variant == "2023":
        simota_cfg = ota_jax.SimOTAConfig()
    else:
        simota_cfg = ota_jax.SimOTAConfig(prior="box_and_center", center_radius=2.5, penalty=1e5)
    ota_keys = ("center_radius", "candidate_topk", "reg_weight", "epsilon", "num_iters")
    ota_keys += ("focal_alpha", "focal_gamma", "penalty", "iou_eps")
    ota_kwargs = {key: getattr(ota_cfg, key) for key in ota_keys}
    simota_keys = ("center_radius", "candidate_topk", "iou_weight", "penalty")
    simota_kwargs = {"variant": simota_variant}
    simota_kwargs |= {key: getattr(simota_cfg, key) for key in simota_keys}
    return {**out, "ota": (ota_cfg, ota_kwargs), "simota": (simota_cfg, simota_kwargs)}


def _sync_torch(kind: str) -> None:
    if kind == "cuda":
        import torch

        torch.cuda.synchronize()


def _torch_blocking(call: Callable[[], object], kind: str) -> Callable[[], object]:
    """``call`` ended by ``torch.cuda.synchronize`` on a GPU."""

    def blocking():
        result = call()
        _sync_torch(kind)
        return result

    return blocking


def _summary(timing: harness.Timing) -> dict:
    return {
        "ms": timing.median_ms,
        "ms_min": timing.min_ms,
        "ms_all": [round(t, 3) for t in timing.times_ms],
        "first_call_ms": timing.first_ms,
    }


def agreement(reference: np.ndarray, test: np.ndarray) -> dict:
    """How well ``test`` reproduces ``reference`` (both ``[B, A]`` gt indices, -1 bg)."""
    ref_pos = reference >= 0
    test_pos = test >= 0
    same = ref_pos & (test == reference)
    num_ref = int(ref_pos.sum())
    return {
        "agreement": float(same.sum() / num_ref) if num_ref else 1.0,
        "ref_positives": num_ref,
        "positives": int(test_pos.sum()),
        "same_gt": int(same.sum()),
        "other_gt": int((ref_pos & test_pos & ~same).sum()),
        "missed": int((ref_pos & ~test_pos).sum()),
        "extra": int((~ref_pos & test_pos).sum()),
        "identical": bool(np.array_equal(reference, test)),
    }


def _xla_memory(assigner: str, arrays: dict, config) -> dict:
    """XLA's compile-time ``memory_analysis()`` of the batched call: ``temp_bytes`` and
    ``output_bytes`` (empty where the backend has none)."""
    args, kwargs = _jax_args(assigner, arrays, config)
    try:
        compiled = registered()[assigner].assign_batch.lower(*args, **kwargs).compile()
        analysis = compiled.memory_analysis()
    except Exception:  # memory_analysis is optional per backend; .lower needs a jitted function
        return {}
    if analysis is None:
        return {}
    return {
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "output_bytes": int(analysis.output_size_in_bytes),
    }


# --------------------------------------------------------------------------- memory probe


def _proc_status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _pin_malloc() -> bool:
    """Pins glibc's mmap threshold (so big frees return memory to the OS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 256 * 1024) == 1
        return ok and libc.mallopt(m_trim_threshold, 1024 * 1024) == 1
    except OSError:
        return False


def measure_peak(
    side: str, call: Callable[[], object], devices: Devices, *, fresh: bool, pinned: bool = False
) -> dict:
    """Peak memory of one ``call()`` beyond what was in use before it.

    ``fresh``: this process has run nothing else (a probe subprocess).
    """
    import jax

    where = "fresh process" if fresh else "inline, after other runs: may under-report"
    if side == "torch" and devices.kind == "cuda":
        import torch

        call()
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        call()
        torch.cuda.synchronize()
        return {
            "peak_bytes": int(torch.cuda.max_memory_allocated() - before),
            "memory_method": "torch.cuda.max_memory_allocated minus allocated before",
        }
    if side == "jax" and devices.jax_device.platform != "cpu":
        stats = devices.jax_device.memory_stats()
        if not stats or "peak_bytes_in_use" not in stats:
            return {"peak_bytes": None, "memory_method": "n/a (no memory_stats on this backend)"}
        before = stats["bytes_in_use"]
        jax.block_until_ready(call())
        peak = devices.jax_device.memory_stats()["peak_bytes_in_use"]
        return {
            "peak_bytes": int(peak - before),
            "memory_method": "JAX memory_stats peak_bytes_in_use minus bytes_in_use before "
            f"(first call, compile included; {where})",
        }
    # CPU: the resident-set high-water mark around one call, warm for JAX (the
    # first call compiles); a fresh process's first torch call is measured as is.
    finish = jax.block_until_ready if side == "jax" else (lambda r: r)
    if side == "jax" or not fresh:
        finish(call())
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _proc_status_kib("VmRSS")
    except (OSError, KeyError):
        return {"peak_bytes": None, "memory_method": "n/a (cannot reset VmHWM)"}
    finish(call())
    peak = max(_proc_status_kib("VmHWM") - before, 0) * 1024
    method = "CPU VmHWM (reset via /proc/self/clear_refs) minus VmRSS before the call"
    method += ", glibc mmap threshold 256 KiB" if pinned else ""
    return {"peak_bytes": int(peak), "memory_method": f"{method} ({where})"}


def _probe(spec: str, args) -> dict:
    """One memory measurement in this (fresh) process: ``side:assigner:workload:images``
    (the first ``images`` images of the batch)."""
    side, assigner, name, images = spec.split(":")
    pinned = sys.platform.startswith("linux") and _pin_malloc()
    devices = pick_devices(args.device)
    workload = wl.make_workload(name, args.batch, seed=args.seed).first_images(int(images))
    config, torch_kwargs = configs(args.simota_variant)[assigner]
    if side == "torch":
        with _torch_threads(args.torch_threads):
            call = _torch_call(assigner, workload.to_torch(devices.torch_device), torch_kwargs)
            return measure_peak(side, call, devices, fresh=True, pinned=pinned)
    call = jax_call(assigner, workload.to_jax(devices.jax_device), config)
    return measure_peak(side, call, devices, fresh=True, pinned=pinned)


def measure_memory(side: str, assigner: str, name: str, args, images: int | None = None) -> dict:
    """`measure_peak` in a fresh subprocess, on the first ``images`` images (default all)."""
    probe = f"{side}:{assigner}:{name}:{images or args.batch}"
    keys = ("batch", "seed", "device", "simota_variant")
    argv = ["--probe", probe, *harness.child_args(args, *keys)]
    if args.torch_threads:
        argv += ["--torch-threads", str(args.torch_threads)]
    try:
        return harness.run_child("assign_bench", *argv)
    except RuntimeError as error:  # a row without its memory, not a run without its rows
        return {"peak_bytes": None, "memory_method": f"probe failed: {str(error)[-500:]}"}


# --------------------------------------------------------------------------- main


NO_LOOP = "—"  # table cell of a torch column for an assigner without a PyTorch loop


def _torch_cells(row: dict) -> list[str]:
    """torch time, torch images, speed-up, agreement, torch peak memory."""
    if not row.get("torch_loop", True):
        return [NO_LOOP] * 5
    speedup, agree, images = row.get("speedup"), row.get("agreement"), row.get("torch_images")
    return [
        harness.fmt_ms(row.get("torch_ms")),
        "n/a" if images is None else f"{images}/{row['batch']}",
        "n/a" if speedup is None else f"{speedup:.1f}x",
        "n/a" if agree is None else f"{100 * agree:.3f}%",
        harness.fmt_bytes(row.get("torch_peak_bytes")),
    ]


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| workload | assigner | torch time | torch images | jax time | speed-up | agreement | "
        "torch peak mem | jax peak mem (XLA temp) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        torch_time, images, speedup, agree, torch_mem = _torch_cells(row)
        jax_mem = f"{harness.fmt_bytes(row.get('jax_peak_bytes'))} "
        jax_mem += f"({harness.fmt_bytes(row.get('jax_xla_temp_bytes'))})"
        jax_time = harness.fmt_ms(row.get("jax_ms"))
        cells = [row["workload"], row["assigner"], torch_time, images, jax_time]
        lines.append("| " + " | ".join([*cells, speedup, agree, torch_mem, jax_mem]) + " |")
    return "\n".join(lines)


def markdown_notes(rows: list[dict]) -> str:
    """Footnotes for the table's "—" cells and for loops timed on fewer images."""
    notes = []
    if not all(r.get("torch_loop", True) for r in rows):
        notes.append(f"{NO_LOOP}: no PyTorch reference loop for this assigner.")
    if any(r.get("torch_images", r["batch"]) < r["batch"] for r in rows):
        notes.append(
            "torch images n/B with n < B: the loop was timed on the first n images only "
            "(--torch-budget-s); torch time is the measured time scaled by B/n, agreement and "
            "torch peak memory are over those n images."
        )
    return "\n".join(notes)


def markdown_report(report: dict) -> str:
    """The printed table under a header line naming the device, date, commit and command."""
    rows = report["results"]
    header = f"{harness.markdown_header(report)}; batch {report['settings']['batch']}"
    notes = markdown_notes(rows)
    return f"{header}\n\n{markdown_table(rows)}\n" + (f"\n{notes}\n" if notes else "")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workloads",
        default=None,
        help="comma-separated names from workloads.WORKLOADS (default: "
        + ",".join(wl.DEFAULT_WORKLOADS)
        + "; with --quick: "
        + ",".join(wl.QUICK_WORKLOADS)
        + ")",
    )
    parser.add_argument(
        "--assigners",
        default=None,
        help="comma-separated names from ota_jax.assigners.ASSIGNERS (default: all of them)",
    )
    parser.add_argument("--batch", type=int, default=None, help="images per batch (16; quick 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed JAX calls (10; quick 2)")
    parser.add_argument(
        "--torch-repeats", type=int, default=None, help="timed torch loop calls (3; quick 1)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up calls (1)")
    parser.add_argument(
        "--torch-budget-s",
        type=float,
        default=120.0,
        help="time budget of one torch loop's warm-up and timed calls on one workload: the "
        "loop runs on as many images as fit (at least one) and its time is scaled to the "
        "batch (default 120; 0: no budget, always the whole batch)",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "gpu"))
    parser.add_argument("--seed", type=int, default=0, help="workload seed")
    parser.add_argument(
        "--out",
        default=None,
        help="JSON path (benchmarks/results/<device>/assign.json; quick: assign_quick.json)",
    )
    parser.add_argument(
        "--markdown",
        default=None,
        help="markdown path for the table (default: the JSON path with .md)",
    )
    parser.add_argument("--skip-torch", action="store_true", help="time only ota_jax")
    parser.add_argument("--skip-jax", action="store_true", help="time only the torch loops")
    parser.add_argument(
        "--memory",
        default=None,
        choices=("subprocess", "inline", "none"),
        help="peak memory: a fresh subprocess per measurement (default), in this "
        "process (quick default; may under-report), or not at all",
    )
    parser.add_argument(
        "--no-row-shift-check",
        action="store_true",
        help="skip the extra (untimed) OTA loop with row-min-shifted costs",
    )
    parser.add_argument(
        "--simota-variant",
        default="2023",
        choices=("2023", "2021"),
        help="YOLOX head: 2023 centre prior (default) or 2021 box_and_center",
    )
    parser.add_argument(
        "--torch-mem-limit-gb",
        type=float,
        default=None,
        help="skip a torch loop whose estimated peak exceeds this (CPU 8, GPU 60)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the loops (default: torch's own choice; "
        "on a loaded machine 1 is often faster and steadier)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    if args.workloads is None:
        args.workloads = ",".join(wl.QUICK_WORKLOADS if quick else wl.DEFAULT_WORKLOADS)
    args.workloads = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in args.workloads if n not in wl.WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; known: {sorted(wl.WORKLOADS)}")
    known = list(registered())
    args.assigners = [a.strip() for a in (args.assigners or ",".join(known)).split(",")]
    unknown = [a for a in args.assigners if a not in known]
    if unknown or not args.assigners:
        parser.error(f"unknown assigners {unknown}; registered: {known}")
    if args.batch is None:
        args.batch = 2 if quick else 16
    if args.repeats is None:
        args.repeats = 2 if quick else 10
    if args.torch_repeats is None:
        args.torch_repeats = 1 if quick else 3
    if args.warmup is None:
        args.warmup = 1
    if args.memory is None:
        args.memory = "inline" if quick else "subprocess"
    return args


def _estimated_torch_bytes(assigner: str, workload: wl.Workload) -> int:
    max_real = int(workload.gt_mask.sum(axis=1).max())
    size = max_real * workload.num_anchors * workload.spec.num_classes
    return size * _TORCH_BYTES_PER_MAC[assigner]


@contextlib.contextmanager
def _torch_threads(count: int | None):
    """``torch.set_num_threads(count)`` for the duration (nothing when ``count`` is falsy)."""
    if not count:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_image_count(
    assigner: str, workload: wl.Workload, kwargs: dict, devices: Devices, calls: int, budget_s
) -> int:
    """On how many of the batch's first images the torch loop is timed: all of them, or
    the most for which ``calls`` loop calls fit in ``budget_s`` seconds, judged from a
    warm call on the first image (at least one)."""
    batch = workload.batch_size
    if not budget_s or budget_s <= 0:
        return batch
    call = _torch_call(assigner, workload.first_images(1).to_torch(devices.torch_device), kwargs)
    call()  # the first call of a process also pays for CUDA's start-up and kernel loading
    _sync_torch(devices.kind)
    start = time.perf_counter()
    call()
    _sync_torch(devices.kind)
    per_image_s = time.perf_counter() - start
    return int(min(batch, max(1, budget_s // (per_image_s * calls))))


def bench_row(
    assigner: str, workload: wl.Workload, arrays, devices: Devices, args, limit_gb: float
) -> dict:
    """Times, checks and measures one assigner on one workload (``arrays``: its JAX arrays)."""

    config, torch_kwargs = configs(args.simota_variant)[assigner]
    name, batch = workload.name, workload.batch_size
    prefix = f"[{name}] {assigner} "
    row: dict = {
        "workload": name,
        "assigner": assigner,
        "batch": batch,
        "num_anchors": workload.num_anchors,
        "num_gts": int(workload.gt_mask.sum()),
        "max_gt": int(workload.gt_mask.shape[1]),
        "torch_loop": torch_kwargs is not None,
    }
    sides: dict[str, Callable[[], object]] = {}
    repeats = {"jax": args.repeats, "torch": args.torch_repeats}
    if not args.skip_jax:
        sides["jax"] = harness.blocking(jax_call(assigner, arrays, config))
    tensors = None
    if args.skip_torch or torch_kwargs is None:
        pass
    elif (estimate := _estimated_torch_bytes(assigner, workload)) > limit_gb * 2**30:
        row["torch_skipped"] = (
            f"estimated peak {estimate / 2**30:.1f} GiB > --torch-mem-limit-gb {limit_gb}"
        )
        harness.log(f"{prefix}torch skipped: {row['torch_skipped']}")
    else:
        calls = max(args.warmup, 1) + args.torch_repeats
        count = torch_image_count(
            assigner, workload, torch_kwargs, devices, calls, args.torch_budget_s
        )
        if count < batch:
            harness.log(f"{prefix}torch on {count}/{batch} images (--torch-budget-s)")
        row["torch_images"] = count
        tensors = workload.first_images(count).to_torch(devices.torch_device)
        call = _torch_call(assigner, tensors, torch_kwargs)
        sides["torch"] = _torch_blocking(call, devices.kind)
    # At least one untimed call, the first (whose result is kept): see "Timing".
    warmup = max(args.warmup, 1) - 1
    timings = harness.time_calls(
        sides, repeats=repeats, warmup=warmup, keep_first=True, label=prefix
    )
    for side_name, timing in timings.items():
        row.update({f"{side_name}_{k}": v for k, v in _summary(timing).items()})
    jax_index = None
    if "jax" in timings:
        jax_index = np.asarray(timings["jax"].result.gt_index)
        xla_memory = _xla_memory(assigner, arrays, config)
        row["jax_xla_temp_bytes"] = xla_memory.get("temp_bytes")
    if "torch" in timings:
        count = row["torch_images"]
        row["torch_ms_measured"] = row["torch_ms"]
        row["torch_ms"] *= batch / count
        if jax_index is not None:
            jax_index = jax_index[:count]
            row.update(agreement(timings["torch"].result.cpu().numpy(), jax_index))
            row["speedup"] = row["torch_ms"] / row["jax_ms"]
            harness.log(f"{prefix}agreement {100 * row['agreement']:.3f}%")
            if assigner == "ota" and not args.no_row_shift_check:
                shifted = _torch_call(assigner, tensors, {**torch_kwargs, "shift_rows": True})
                row["vs_row_shifted_loop"] = agreement(shifted().cpu().numpy(), jax_index)
    timed = list(timings)
    timings.clear()  # free the results before measuring memory
    for side in timed if args.memory != "none" else ():
        harness.log(f"{prefix}{side} memory ({args.memory}) ...")
        if args.memory == "subprocess":
            images = row["torch_images"] if side == "torch" else batch
            probe = measure_memory(side, assigner, name, args, images)
        elif side == "jax" and devices.jax_device.platform != "cpu":
            # An accelerator's peak counter cannot be reset, so in this process it would
            # hold earlier, larger runs: take what XLA allocates for the call instead.
            known = "temp_bytes" in xla_memory
            probe = {
                "peak_bytes": xla_memory["temp_bytes"] + xla_memory["output_bytes"]
                if known
                else None,
                "memory_method": "XLA memory_analysis of the compiled call: temp + output"
                if known
                else "n/a (no memory_analysis on this backend)",
            }
        else:
            call = (
                jax_call(assigner, arrays, config)
                if side == "jax"
                else _torch_call(assigner, tensors, torch_kwargs)
            )
            probe = measure_peak(side, call, devices, fresh=False)
        row[f"{side}_peak_bytes"] = probe.get("peak_bytes")
        row[f"{side}_memory_method"] = probe.get("memory_method")
    return row


def _asdict(config) -> dict | str:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else repr(config)


def run(args, progress: Callable[[str], None] | None = None) -> dict:
    """Runs the benchmark of ``args`` (from `parse_args`); ``progress(workload)`` is
    called before each workload."""
    import jax

    devices = pick_devices(args.device)
    cfgs = configs(args.simota_variant)
    limit_gb = args.torch_mem_limit_gb
    if limit_gb is None:
        limit_gb = 60.0 if devices.kind == "cuda" else 8.0
    torch_threads = None
    load_before = harness.load_average()
    harness.log(
        f"device: {devices.name} (torch on {devices.torch_device}, jax on {devices.jax_device})"
    )
    rows, workload_info = [], []
    with _torch_threads(None if args.skip_torch else args.torch_threads):
        if not args.skip_torch:
            import torch

            torch_threads = torch.get_num_threads()
        for name in args.workloads:
            if progress is not None:
                progress(name)
            start = time.perf_counter()
            workload = wl.make_workload(name, args.batch, seed=args.seed)
            workload_info.append(workload.summary())
            harness.log(
                f"[{name}] batch {workload.batch_size}, {workload.num_anchors} anchors, "
                f"{workload.gt_mask.sum()} gts (made in {time.perf_counter() - start:.1f} s)"
            )
            arrays = None if args.skip_jax else workload.to_jax(devices.jax_device)
            for assigner in args.assigners:
                rows.append(bench_row(assigner, workload, arrays, devices, args, limit_gb))
            # The next workload has other shapes: its executables are new, and a crowded
            # workload's (every size bucket of every assigner) take gigabytes.
            jax.clear_caches()

    return {
        **harness.report_header(
            devices.name, devices.slug, devices.jax_device, load_before, "torch"
        ),
        "torch_device": None if args.skip_torch else devices.torch_device,
        "torch_num_threads": torch_threads,
        "settings": {
            "batch": args.batch,
            "assigners": list(args.assigners),
            "torch_loops": [a for a in args.assigners if cfgs[a][1] is not None],
            "repeats": args.repeats,
            "torch_repeats": args.torch_repeats,
            "torch_budget_s": args.torch_budget_s,
            "warmup": args.warmup,
            "seed": args.seed,
            "quick": args.quick,
            "memory": args.memory,
            "simota_variant": args.simota_variant,
            "timing": "median of repeats after warm-up; block_until_ready / cuda.synchronize",
            "torch_images": "torch loop timed on the first torch_images images (budget); "
            "torch_ms is scaled to the batch, torch_ms_measured and torch_ms_all are as timed",
            "agreement": "fraction of the torch loop's positive anchors with the same gt in "
            "jax, over the torch_images images the loop ran",
        },
        "configs": {
            **{a: _asdict(cfgs[a][0]) for a in args.assigners},
            **{f"torch_{a}_kwargs": cfgs[a][1] for a in TORCH_LOOPS},
        },
        "workloads": workload_info,
        "results": rows,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.probe:
        result = _probe(args.probe, args)
        harness.print_result(result)
        return result
    report = run(args)
    out = Path(args.out or harness.default_out("assign", report["device_slug"], args.quick))
    markdown = Path(args.markdown) if args.markdown else out.with_suffix(".md")
    report = harness.write_report(out, report, markdown_report(report), markdown)
    print(markdown_table(report["results"]))
    print(f"\n{report['device']}; batch {args.batch}; JSON: {out}; markdown: {markdown}")
    return report


if __name__ == "__main__":
    main()
