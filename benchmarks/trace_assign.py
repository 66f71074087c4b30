"""Where one assigner's time goes: a profiler trace, summed by XLA op or GPU kernel.

Runs a registered assigner on a workload of ``workloads.py`` (compiled and warmed
up first), records ``--calls`` calls with ``jax.profiler.trace`` and prints the
ops that took the most time. On a GPU these are the device's kernels, and the
kernel count per call says how much of a small batch's time is launch latency;
on a CPU they are the host's XLA thunks. On a device it also reports the idle
time inside each call, when the device waited for the host (a ``lax.switch``
reads its branch on the host; launches outside CUDA graphs), and the longest
idle gaps with the kernels on either side. The whole trace stays in ``--out-dir``
(open the ``*.trace.json.gz`` in https://ui.perfetto.dev), the summary (a report
with the run header) next to it in ``summary.json`` and ``summary.md`` (``--out``:
elsewhere).

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

from . import assign_bench, harness
from . import workloads as wl


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assigner", default="ota", help="a name of ota_jax.assigners.ASSIGNERS")
    parser.add_argument("--workload", default="fcos1024", choices=sorted(wl.WORKLOADS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--calls", type=int, default=3, help="calls recorded")
    parser.add_argument("--top", type=int, default=20, help="ops printed")
    parser.add_argument(
        "--out-dir", default="/tmp/ota_jax_trace", help="the profiler's trace goes here"
    )
    parser.add_argument(
        "--out", default=None, help="the summary's JSON path (default: <out-dir>/summary.json)"
    )
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


def markdown_report(report: dict) -> str:
    """The header line, the ops per call and the top ops (and idle gaps on a device)."""
    lines = [
        f"{harness.markdown_header(report)}; {report['assigner']} on {report['workload']} "
        f"x{report['batch']}",
        "",
        f"Per call: {report['ops_per_call']:.0f} {report['where']} ops, "
        f"{report['op_us_per_call'] / 1e3:.2f} ms in them.",
        "",
        "| us per call | count per call | op |",
        "|---|---|---|",
        *(
            f"| {r['us_per_call']:.1f} | {r['count_per_call']:.0f} | `{r['name']}` |"
            for r in report["top"]
        ),
    ]
    if "idle_us_per_call" in report:
        lines += [
            "",
            f"Idle within calls: {report['idle_us_per_call']:.1f} us per call; longest gaps:",
            "",
            "| us | after | before |",
            "|---|---|---|",
            *(
                f"| {g['us']:.1f} | `{g['after']}` | `{g['before']}` |"
                for g in report["longest_gaps"]
            ),
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    import jax

    args = parse_args(argv)
    device = jax.devices()[0]
    name, slug = harness.device_name_and_slug(device)
    load_before = harness.load_average()
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
    report = {
        **harness.report_header(name, slug, device, load_before),
        "benchmark": "trace",
        "assigner": args.assigner,
        "workload": args.workload,
        "batch": args.batch,
        "trace": str(trace_file),
        **summarize(trace_file, args.calls, args.top),
    }
    markdown = markdown_report(report)
    report = harness.write_report(args.out or out / "summary.json", report, markdown)
    print(markdown)
    return report


if __name__ == "__main__":
    main()
