"""Compile time: the first call's time against the later calls', per size policy.

A user pays the first call (tracing, compiling every size bucket, one run)
before any other. For each target and size policy (the assigner config's
``sizes`` field, see `ota_jax.resolve_sizes`) this runs a fresh Python process,
with JAX's persistent compilation cache off, and reports the first call and the
median of ``--repeats`` later calls (after ``--warmup`` more). ``--rounds``
repeats the whole set, interleaving the processes (policy A, policy B, A, B,
...) so that a change of machine load hits all alike; the report gives the
medians over rounds and each policy's ratios to the padded program (``off``).

Targets:

* ``ota``, ``simota`` (or any registered assigner): the assigner alone on a
  `workloads` batch (default ``yolox640``, 16 images, gts padded to 100).
* ``step``: the tiny FCOS detector's train step (batch 4, 256x256, gts padded
  to 16, 20 classes) with ``--step-assigner`` (default ``ota``) and the policy;
  policy ``fixed`` is the same step with a precomputed assignment (no assigner
  compiled into it), the baseline.

A policy is a name (``auto``, ``cpu``, ``accelerator``, ``off``) or ``Sizes``
fields, ``key=value`` joined by ``+`` (``gt_start=16+column_start=512+max_pairs=0``;
``pairs=16x512/32x2048/allx2048``: ``(gts, columns)`` pairs, ``all`` for every gt slot).

Examples::

    python -m benchmarks.compile_bench                       # ota, simota on yolox640: auto, off
    python -m benchmarks.compile_bench --targets step --policies fixed,auto,off
    python -m benchmarks.compile_bench --workload tiny320 --batch 2 --repeats 3 --quick
"""

from __future__ import annotations

import argparse
import os
import statistics

from . import harness


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="ota,simota", help="comma-separated; or 'step'")
    parser.add_argument("--policies", default="auto,off", help="comma-separated size policies")
    parser.add_argument("--workload", default="yolox640")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--step-assigner", default="ota")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions")
    parser.add_argument(
        "--quick", action="store_true", help="XLA's optimisations off (a smoke test)"
    )
    parser.add_argument(
        "--out", default=None, help="JSON path (default results/<device>/compile[_quick].json)"
    )
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def parse_policy(text: str):
    """A size policy: a name, or ``Sizes`` fields as ``key=value`` joined by ``+``."""
    from ota_jax import Sizes

    if "=" not in text:
        return text
    fields = {}
    for item in text.split("+"):
        key, _, value = item.partition("=")
        if key == "pairs":  # gtsxcolumns joined by "/", "all" gts for every slot
            pairs = [pair.split("x") for pair in value.split("/")]
            fields[key] = tuple((None if g == "all" else int(g), int(c)) for g, c in pairs)
        else:
            fields[key] = None if value == "none" else int(value)
    return Sizes(**fields)


def _timed(call, warmup: int, repeats: int) -> dict:
    """The first call (wall, and CPU seconds of all threads: less moved than wall time by
    other processes' load) and the median of the later calls."""
    timing = harness.time_calls({"call": harness.blocking(call)}, repeats=repeats, warmup=warmup)
    timing = timing["call"]
    return {
        "first_call_s": timing.first_ms / 1e3,
        "first_call_cpu_s": timing.first_cpu_s,
        "ms": timing.median_ms,
        "ms_min": timing.min_ms,
    }


def _assigner_call(args: argparse.Namespace, assigner: str, policy: str):
    import dataclasses

    from . import assign_bench
    from . import workloads as wl

    arrays = wl.make_workload(args.workload, args.batch).to_jax()
    config = assign_bench.configs()[assigner][0]
    config = dataclasses.replace(config, sizes=parse_policy(policy))
    return assign_bench.jax_call(assigner, arrays, config)


def _step_call(args: argparse.Namespace, policy: str):
    import dataclasses

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ota_jax.assigners import get_assigner
    from ota_jax.detector import (
        FCOS,
        LossConfig,
        OptimizerConfig,
        assign_targets,
        create_train_state,
        fcos_config,
        make_optimizer,
    )

    from . import train_step_bench

    host = train_step_bench.make_batch(args.batch, 256, 256, 16, 20, seed=0)
    batch = {key: jnp.asarray(value) for key, value in host.items()}
    model = FCOS(fcos_config("tiny", num_classes=20), rngs=nnx.Rngs(0))
    tx = make_optimizer(OptimizerConfig())
    if policy == "fixed":
        # Targets from the FCOS rule (cheap to compile), computed before the clock starts.
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        net = nnx.merge(graphdef, params, rest)
        points, strides = net.anchors((256, 256))
        outputs = net(batch["image"])
        fixed = assign_targets(outputs, points, strides, batch, config=LossConfig(assigner="fcos"))
        fixed = jax.block_until_ready(fixed)
        loss_config = LossConfig(assigner=train_step_bench._fixed_assigner(fixed))
    else:
        spec = get_assigner(args.step_assigner)
        config = dataclasses.replace(spec.config_class(), sizes=parse_policy(policy))
        loss_config = LossConfig(assigner=args.step_assigner, assigner_config=config)
    call, _ = train_step_bench._step_call(
        create_train_state(model, tx, loss_config=loss_config), batch
    )
    return call


def _child(args: argparse.Namespace) -> None:
    """One target under one policy in this fresh process; prints JSON."""
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    if args.quick:
        jax.config.update("jax_disable_most_optimizations", True)
    target, policy = args.child
    if target == "step":
        call = _step_call(args, policy)
    else:
        call = _assigner_call(args, target, policy)
    harness.print_result(_timed(call, args.warmup, args.repeats))


def run_policy(target: str, policy: str, args: argparse.Namespace) -> dict:
    """One target and policy in a fresh subprocess, without a compilation cache."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    keys = ("workload", "batch", "step_assigner", "warmup", "repeats")
    argv = ["--child", target, policy, *harness.child_args(args, *keys)]
    return harness.run_child("compile_bench", *argv, env=env)


def summarize(runs: list[dict]) -> list[dict]:
    """Medians over rounds per target and policy, and ratios to the baseline policy
    (``fixed`` for the train step, else ``off``) of the same target."""
    keys = sorted({(r["target"], r["policy"]) for r in runs}, key=lambda k: (k[0], k[1]))
    rows = []
    for target, policy in keys:
        mine = [r for r in runs if (r["target"], r["policy"]) == (target, policy)]
        rows.append(
            {
                "target": target,
                "policy": policy,
                "rounds": len(mine),
                "first_call_s": statistics.median(r["first_call_s"] for r in mine),
                "first_call_cpu_s": statistics.median(r["first_call_cpu_s"] for r in mine),
                "ms": statistics.median(r["ms"] for r in mine),
                "first_call_s_all": [r["first_call_s"] for r in mine],
                "first_call_cpu_s_all": [r["first_call_cpu_s"] for r in mine],
                "ms_all": [r["ms"] for r in mine],
            }
        )
    for row in rows:
        base_policy = "fixed" if row["target"] == "step" else "off"
        base = [r for r in rows if (r["target"], r["policy"]) == (row["target"], base_policy)]
        # Ratios within a round, then their median: a load change moves both alike.
        firsts, firsts_cpu, speedups = [], [], []
        for i in range(row["rounds"]):
            if base and i < base[0]["rounds"]:
                firsts.append(row["first_call_s_all"][i] / base[0]["first_call_s_all"][i])
                firsts_cpu.append(
                    row["first_call_cpu_s_all"][i] / base[0]["first_call_cpu_s_all"][i]
                )
                speedups.append(base[0]["ms_all"][i] / row["ms_all"][i])
        row["first_call_vs_base"] = statistics.median(firsts) if firsts else None
        row["first_call_cpu_vs_base"] = statistics.median(firsts_cpu) if firsts_cpu else None
        row["later_speedup_vs_base"] = statistics.median(speedups) if speedups else None
        row["base_policy"] = base_policy if base else None
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| target | sizes | first call s | first call CPU s | ms per later call "
        "| first call / baseline's (wall, CPU) | later-call speed-up over baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        first, first_cpu = r["first_call_vs_base"], r["first_call_cpu_vs_base"]
        speed = r["later_speedup_vs_base"]
        lines.append(
            f"| {r['target']} | `{r['policy']}` | {r['first_call_s']:.2f} "
            f"| {r['first_call_cpu_s']:.2f} | {r['ms']:.3g} "
            f"| {'—' if first is None else f'{first:.2f}x, {first_cpu:.2f}x'} "
            f"| {'—' if speed is None else f'{speed:.1f}x'} |"
        )
    return "\n".join(lines)


def run(argv=None) -> dict:
    args = parse_args(argv)
    if args.child is not None:
        _child(args)
        return {}
    import jax

    device = jax.devices()[0]
    load_before = harness.load_average()
    name, slug = harness.device_name_and_slug(device)
    out = args.out or harness.default_out("compile", slug, args.quick)
    targets = args.targets.split(",")
    policies = args.policies.split(",")
    runs = []
    total = args.rounds * len(targets) * len(policies)
    for round_ in range(args.rounds):
        for target in targets:
            for policy in policies:
                harness.log(f"{len(runs) + 1}/{total}: {target} sizes={policy} ...")
                result = run_policy(target, policy, args)
                runs.append({"round": round_, "target": target, "policy": policy, **result})
                harness.log(f"  first {result['first_call_s']:.2f} s, {result['ms']:.3g} ms")
    rows = summarize(runs)
    report = {
        **harness.report_header(name, slug, device, load_before),
        "benchmark": "compile",
        "workload": args.workload,
        "batch": args.batch,
        "step": "tiny FCOS, batch --batch, 256x256, gts padded to 16, 20 classes"
        if "step" in targets
        else None,
        "step_assigner": args.step_assigner if "step" in targets else None,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "quick": args.quick,
        "timing": "each target and policy in a fresh process, no persistent compilation "
        "cache; first call = trace + compile + one run (wall, and CPU seconds of all "
        "threads); later = median of repeats after "
        "warmup; medians over interleaved rounds; ratios taken within a round",
        "rows": rows,
        "runs": runs,
    }
    markdown = f"{harness.markdown_header(report)}\n\n{markdown_table(rows)}\n"
    harness.write_report(out, report, markdown)
    print(markdown)
    return report


if __name__ == "__main__":
    run()
