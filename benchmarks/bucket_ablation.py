"""What the size buckets cost and buy: first-call (compile) time against the time per call.

Each variant runs in a fresh subprocess, so that nothing compiled by another is
reused and its environment is set before JAX starts: ``OTA_JAX_BUCKETS`` (see
``ota_jax.resolve_sizes``: ``auto``, ``cpu``, ``accelerator``, ``off``) and,
after a colon, extra ``XLA_FLAGS``. For each workload and assigner the child
reports the first call (tracing, compiling every bucket and one run) and the
median of ``--repeats`` calls after ``--warmup`` more.

On a GPU the default variants also turn XLA's command buffers (CUDA graphs) off,
to tell launch latency from the cost of the buckets' ``lax.switch``. On an H100
at ``575e4d5`` (``results/nvidia-h100-80gb-hbm3/buckets.md``) the buckets won
everywhere: one size (``off``) was 2x to 7x slower, and without command buffers
OTA took 1.5x to 2.4x as long (SimOTA 1.0x to 1.4x).

Examples::

    python -m benchmarks.bucket_ablation                    # yolox640, fcos1024; OTA, SimOTA
    python -m benchmarks.bucket_ablation --variants auto,off --workloads tiny320 --quick
    python -m benchmarks.bucket_ablation --variants "auto,off,off:--xla_gpu_enable_command_buffer="
"""

from __future__ import annotations

import argparse
import os
import re

from . import harness
from . import workloads as wl

CPU_VARIANTS = ("auto", "accelerator", "off")
_NO_COMMAND_BUFFERS = "--xla_gpu_enable_command_buffer="
ACCELERATOR_VARIANTS = (
    "auto",
    "cpu",
    "off",
    f"auto:{_NO_COMMAND_BUFFERS}",
    f"off:{_NO_COMMAND_BUFFERS}",
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="yolox640,fcos1024", help="comma-separated")
    parser.add_argument("--assigners", default="ota,simota", help="comma-separated")
    parser.add_argument(
        "--variants",
        default=None,
        help="comma-separated OTA_JAX_BUCKETS values, each optionally ':XLA_FLAGS' (a comma "
        "inside the flags is kept unless a bucket name follows it; default "
        f"on a CPU: {','.join(CPU_VARIANTS)}; elsewhere: {','.join(ACCELERATOR_VARIANTS)})",
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--quick", action="store_true", help="XLA's optimisations off (a smoke test)"
    )
    parser.add_argument(
        "--out", default=None, help="JSON path (default results/<device>/buckets[_quick].json)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _child(args: argparse.Namespace) -> None:
    """Times every workload and assigner under this process's environment; prints JSON."""
    import jax

    if args.quick:
        jax.config.update("jax_disable_most_optimizations", True)
    from . import assign_bench

    rows = []
    configs = assign_bench.configs()
    for name in args.workloads.split(","):
        arrays = wl.make_workload(name, args.batch).to_jax()
        for assigner in args.assigners.split(","):
            call = assign_bench.jax_call(assigner, arrays, configs[assigner][0])
            timing = harness.time_calls(
                {assigner: harness.blocking(call)}, repeats=args.repeats, warmup=args.warmup
            )[assigner]
            rows.append(
                {
                    "workload": name,
                    "assigner": assigner,
                    "first_call_s": timing.first_ms / 1e3,
                    "ms": timing.median_ms,
                    "ms_min": timing.min_ms,
                }
            )
            jax.clear_caches()
    harness.print_result({"rows": rows})


def split_variants(text: str) -> list[str]:
    """``--variants`` as a list: split at the commas that a bucket name follows, so
    that XLA flags may hold commas (``off:--xla_gpu_enable_command_buffer=FUSION,CUBLAS``)."""
    from ota_jax._src import buckets

    names = "|".join(("auto", *buckets.CHOICES))
    return re.split(rf",(?=(?:{names})(?::|,|$))", text)


def run_variant(variant: str, args: argparse.Namespace) -> list[dict]:
    """One variant (``BUCKETS`` or ``BUCKETS:XLA_FLAGS``) in a fresh subprocess."""
    buckets, _, flags = variant.partition(":")
    env = dict(os.environ, OTA_JAX_BUCKETS=buckets)
    if flags:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
    keys = ("workloads", "assigners", "batch", "warmup", "repeats")
    argv = ["--child", variant, *harness.child_args(args, *keys)]
    rows = harness.run_child("bucket_ablation", *argv, env=env)["rows"]
    return [{"variant": variant, "buckets": buckets, "xla_flags": flags, **r} for r in rows]


def markdown_table(rows: list[dict]) -> str:
    """Rows per workload and assigner, each variant's times and its ratio to ``auto``."""
    base = {(r["workload"], r["assigner"]): r for r in rows if r["variant"] == "auto"}
    lines = [
        "| workload | assigner | buckets | XLA flags | first call s | ms per call | vs auto |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["workload"], r["assigner"])):
        reference = base.get((r["workload"], r["assigner"]))
        ratio = f"{r['ms'] / reference['ms']:.2f}x" if reference else "—"
        lines.append(
            f"| {r['workload']} | {r['assigner']} | {r['buckets']} | {r['xla_flags'] or '—'} "
            f"| {r['first_call_s']:.1f} | {r['ms']:.3g} | {ratio} |"
        )
    return "\n".join(lines)


def run(argv=None) -> dict:
    args = parse_args(argv)
    if args.child is not None:
        _child(args)
        return {}
    import jax

    device = jax.devices()[0]
    default = CPU_VARIANTS if device.platform == "cpu" else ACCELERATOR_VARIANTS
    variants = split_variants(args.variants) if args.variants else list(default)
    load_before = harness.load_average()
    name, slug = harness.device_name_and_slug(device)
    out = args.out or harness.default_out("buckets", slug, args.quick)
    rows = []
    for i, variant in enumerate(variants):
        harness.log(f"variant {i + 1}/{len(variants)}: {variant} ...")
        rows += run_variant(variant, args)
        report = {
            **harness.report_header(name, slug, device, load_before),
            "batch": args.batch,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "quick": args.quick,
            "variants": variants,
            "complete": i == len(variants) - 1,
            "rows": rows,
        }
        # After every variant: a run stopped later keeps the variants it finished.
        so_far = "" if report["complete"] else " (incomplete: the variants run so far)"
        markdown = f"{harness.markdown_header(report)}{so_far}\n\n{markdown_table(rows)}\n"
        harness.write_report(out, report, markdown)
    print(markdown)
    return report


if __name__ == "__main__":
    run()
