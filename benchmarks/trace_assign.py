"""Where one assigner's time goes: a profiler trace, summed by XLA op or GPU kernel.

Runs a registered assigner on a workload of ``workloads.py`` (compiled and warmed
up first), records ``--calls`` calls with ``jax.profiler.trace`` and prints the
ops that took the most time. On a GPU these are the device's kernels, and the
kernel count per call says how much of a small batch's time is launch latency;
on a CPU they are the host's XLA thunks. On a device it also reports the idle
time inside each call, when the device waited for the host (a ``lax.switch``
reads its branch on the host; launches outside CUDA graphs), and the longest
idle gaps with the kernels on either side. The whole trace stays in ``--out-dir``
(open the ``*.trace.json.gz`` in https://ui.perfetto.dev) next to
``summary.json``.

Example::

    python -m benchmarks.trace_assign --assigner simota --workload fcos1024
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import time
from pathlib import Path

from . import assign_bench, run_info
from . import workloads as wl


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assigner", default="ota", help="a name of ota_jax.assigners.ASSIGNERS")
    parser.add_argument("--workload", default="fcos1024", choices=sorted(wl.WORKLOADS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--calls", type=int, default=3, help="calls recorded")
    parser.add_argument("--top", type=int, default=20, help="ops printed")
    parser.add_argument("--out-dir", default="/tmp/ota_jax_trace")
    return parser.parse_args(argv)


# Pause between recorded calls: device gaps longer than half of it are between calls.
_PAUSE_S = 0.005


def idle_gaps(timed: list[dict], calls: int, top: int) -> dict:
    """The device's idle time within calls: gaps between one kernel's end and the next
    one's start (calls are ``_PAUSE_S`` apart, so longer gaps are between them)."""
    timed = sorted(timed, key=lambda e: e["ts"])
    gaps = []
    last = timed[0]  # the kernel that ends latest so far (streams may overlap)
    for event in timed[1:]:
        gap = event["ts"] - (last["ts"] + last["dur"])
        if 0 < gap < _PAUSE_S * 1e6 / 2:
            gaps.append((gap, last["name"], event["name"]))
        last = max(last, event, key=lambda e: e["ts"] + e["dur"])
    gaps.sort(reverse=True)
    return {
        "idle_us_per_call": sum(g for g, _, _ in gaps) / calls,
        "longest_gaps": [{"us": g, "after": a, "before": b} for g, a, b in gaps[:top]],
    }


def summarize(trace_file: Path, calls: int, top: int) -> dict:
    """Total microseconds per op name on the device (the host when there is none)."""
    with gzip.open(trace_file) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    processes = {
        e["pid"]: e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    devices = {pid for pid, name in processes.items() if "/device:" in name}
    timed = [e for e in events if e.get("ph") == "X" and "dur" in e]
    if devices:
        timed = [e for e in timed if e["pid"] in devices]
    else:  # the host's XLA thunks, not the Python frames ("$file:line") around them
        timed = [e for e in timed if not e["name"].startswith("$") and "::" not in e["name"]]
    gaps = idle_gaps(timed, calls, top) if devices else {}
    total = collections.Counter()
    count = collections.Counter()
    for event in timed:
        total[event["name"]] += event["dur"]
        count[event["name"]] += 1
    return {
        "where": "device" if devices else "host",
        "ops_per_call": len(timed) / calls,
        "op_us_per_call": sum(total.values()) / calls,
        "top": [
            {"name": name, "us_per_call": us / calls, "count_per_call": count[name] / calls}
            for name, us in total.most_common(top)
        ],
        **gaps,
    }


def main(argv=None) -> dict:
    import jax

    args = parse_args(argv)
    config = assign_bench.configs()[args.assigner][0]
    workload = wl.make_workload(args.workload, args.batch)
    call = assign_bench.jax_call(args.assigner, workload.to_jax(), config)
    jax.block_until_ready(call())  # compile
    jax.block_until_ready(call())
    out = Path(args.out_dir)
    with jax.profiler.trace(str(out), create_perfetto_trace=True):
        for _ in range(args.calls):
            jax.block_until_ready(call())
            time.sleep(_PAUSE_S)  # tells calls apart in the device's timeline
    trace_file = max(out.glob("**/*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    summary = {
        "assigner": args.assigner,
        "workload": args.workload,
        "batch": args.batch,
        "device": run_info.device_name_and_slug(jax.devices()[0])[0],
        "trace": str(trace_file),
        **summarize(trace_file, args.calls, args.top),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"{summary['device']}: {args.assigner} on {args.workload} x{args.batch}, per call "
        f"{summary['ops_per_call']:.0f} {summary['where']} ops, "
        f"{summary['op_us_per_call'] / 1e3:.2f} ms in them"
    )
    for row in summary["top"]:
        print(f"{row['us_per_call']:10.1f} us  x{row['count_per_call']:<6.0f} {row['name']}")
    if "idle_us_per_call" in summary:
        print(f"idle within calls: {summary['idle_us_per_call']:.1f} us per call; longest gaps:")
        for gap in summary["longest_gaps"]:
            print(f"{gap['us']:10.1f} us  after {gap['after'][:60]}  before {gap['before'][:60]}")
    return summary


if __name__ == "__main__":
    main()
