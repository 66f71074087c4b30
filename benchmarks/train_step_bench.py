"""Benchmark: the full FCOS train step with OTA / SimOTA, and the assignment's share of it.

For each assigner (``ota``, ``simota``, or any of ``ota_jax.assigners.ASSIGNERS``
named by ``--assigners``) this times, on one synthetic batch:

* ``step``: ``ota_jax.detector.train_step`` (forward, assignment, losses,
  backward, optimizer update) with ``LossConfig(assigner=name)``;
* ``fixed``: the same step with the assignment precomputed: the `LossConfig`'s
  assigner is a callable that ignores its inputs and returns an `Assignment`
  for the batch computed once from the initial model's head outputs (it enters
  the compiled step as a constant, so the step does everything but assigning).
  After the assignment the step's work has static shapes, so one fixed step
  (with the first assigner's targets, ``fixed_assignment_from`` in the JSON)
  is the baseline of every assigner: one compilation fewer;
* ``assign``: the assigner alone (``ota_jax.detector.assign_targets``, jitted)
  on the step's own head outputs (the initial model's forward on the batch).

Per assigner it reports step ms, fixed-step ms, assign-alone ms and the
assignment's share of the step two ways: ``(step - fixed) / step`` and
``assign / step``. Both are clipped to ``[0, 1]``: timing noise can make
``step - fixed`` slightly negative when the assignment is cheap (the raw
values are kept in the JSON as ``*_raw``).

Timing: one warm-up call per variant (compilation, excluded), then
``--repeats`` rounds in which every variant runs once, interleaved so that a
change of machine load hits all alike; each call is ended by
``jax.block_until_ready``; medians are reported (min and all times are in the
JSON). The train steps keep training (their state is donated and replaced), so
later calls see slightly different weights; the work per call is unchanged.

The defaults are the OTA paper's COCO setting on a GPU: FCOS-R50, 800x1344
inputs, batch 16, gts padded to 100. Synthetic batch: random normal images and
2-8 random gt boxes per image (seeded), padded to ``--max-gt``.

Examples::

    python -m benchmarks.train_step_bench                  # FCOS-R50 800x1344 batch 16 (GPU)
    python -m benchmarks.train_step_bench --quick --out /tmp/q.json
    python -m benchmarks.train_step_bench --preset tiny --image-size 128 128 --batch 8
"""

from __future__ import annotations

import argparse

import numpy as np

from . import harness

ASSIGNER_NAMES = ("ota", "simota")  # the default; any registered assigner can be named


# --------------------------------------------------------------------------- environment


# --------------------------------------------------------------------------- inputs


def make_batch(
    batch: int, height: int, width: int, max_gt: int, num_classes: int, seed: int
) -> dict[str, np.ndarray]:
    """A deterministic synthetic batch: normal images, 2-8 random boxes per image."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, height, width, 3), dtype=np.float32)
    boxes = np.zeros((batch, max_gt, 4), np.float32)
    labels = np.zeros((batch, max_gt), np.int32)
    mask = np.zeros((batch, max_gt), bool)
    for b in range(batch):
        n = int(rng.integers(2, 9)) if max_gt >= 2 else max_gt
        n = min(n, max_gt)
        size = rng.uniform(0.05, 0.5, (n, 2)) * (width, height)
        low = rng.uniform(0.0, 1.0, (n, 2)) * ((width, height) - size)
        boxes[b, :n] = np.concatenate([low, low + size], axis=1)
        labels[b, :n] = rng.integers(0, num_classes, n)
        mask[b, :n] = True
    return {"image": images, "gt_boxes": boxes, "gt_labels": labels, "gt_mask": mask}


# --------------------------------------------------------------------------- timing


def _summary(timing) -> dict:
    return {
        "median_ms": timing.median_ms,
        "min_ms": timing.min_ms,
        "times_ms": timing.times_ms,
        "warmup_s": timing.first_ms / 1e3,
    }


def _step_call(state, batch):
    """A call running `train_step` on a donated state it keeps replacing."""
    import jax

    from ota_jax.detector import train_step

    holder = {"state": state}

    def call():
        new_state, metrics = train_step(holder["state"], batch)
        jax.block_until_ready((new_state, metrics))
        holder["state"] = new_state
        return metrics

    return call


def _fixed_assigner(assignment):
    """A batched assigner (`ota_assign_batch`'s signature) returning `assignment`."""

    def assign(*args, **kwargs):
        del args, kwargs
        return assignment

    return assign


def run(args) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ota_jax.detector import (
        FCOS,
        LossConfig,
        OptimizerConfig,
        assign_targets,
        create_train_state,
        fcos_config,
        make_optimizer,
    )

    load_before = harness.load_average()
    height, width = args.image_size
    name, slug = harness.device_name_and_slug(jax.devices()[0])
    harness.log(
        f"device {name}; FCOS-{args.preset} ({args.dtype}) {height}x{width}, batch {args.batch}, "
        f"max_gt {args.max_gt}, {args.repeats} repeats"
    )
    host_batch = make_batch(
        args.batch, height, width, args.max_gt, args.num_classes, seed=args.seed
    )
    batch = {key: jnp.asarray(value) for key, value in host_batch.items()}
    config = fcos_config(args.preset, num_classes=args.num_classes, dtype=args.dtype)
    model = FCOS(config, rngs=nnx.Rngs(args.seed))
    tx = make_optimizer(OptimizerConfig())

    graphdef, params0, rest0 = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def forward(params, rest, images):
        # The step's own head outputs: the initial model on the batch.
        net = nnx.merge(graphdef, params, rest)
        points, strides = net.anchors(tuple(images.shape[1:3]))
        return net(images), points, strides

    outputs, points, strides = jax.block_until_ready(forward(params0, rest0, batch["image"]))
    num_anchors = int(points.shape[0])

    sides: dict = {}  # zero-argument calls that block until done
    fixed_from = None
    extra: dict[str, dict] = {}
    for assigner in args.assigners:
        loss_config = LossConfig(assigner=assigner)
        assign_fn = jax.jit(
            lambda o, p, s, b, cfg=loss_config: assign_targets(o, p, s, b, config=cfg)
        )
        fixed = jax.block_until_ready(assign_fn(outputs, points, strides, batch))
        extra[assigner] = {
            "num_fg": int(np.asarray(fixed.num_fg).sum()),
            "num_gt": int(host_batch["gt_mask"].sum()),
        }
        step_call = _step_call(create_train_state(model, tx, loss_config=loss_config), batch)
        sides[(assigner, "step")] = step_call
        if "fixed" not in sides:
            # One fixed-assignment step serves every assigner: after the assignment the
            # step's work has static shapes, whichever assigner's targets it uses.
            fixed_config = LossConfig(assigner=_fixed_assigner(fixed))
            fixed_call = _step_call(create_train_state(model, tx, loss_config=fixed_config), batch)
            sides["fixed"] = fixed_call
            fixed_from = assigner
        sides[(assigner, "assign")] = harness.blocking(
            lambda f=assign_fn: f(outputs, points, strides, batch)
        )

    # The first call of each compiles (``warmup_s``); no more warm-up.
    timings = {
        key: _summary(t) for key, t in harness.time_calls(sides, repeats=args.repeats).items()
    }

    results = []
    for assigner in args.assigners:
        step = timings[(assigner, "step")]
        fixed = timings["fixed"]
        alone = timings[(assigner, "assign")]
        share_diff_raw = (step["median_ms"] - fixed["median_ms"]) / step["median_ms"]
        share_alone_raw = alone["median_ms"] / step["median_ms"]
        results.append(
            {
                "assigner": assigner,
                "step_ms": step["median_ms"],
                "fixed_step_ms": fixed["median_ms"],
                "assign_ms": alone["median_ms"],
                "share_step_minus_fixed": float(np.clip(share_diff_raw, 0.0, 1.0)),
                "share_assign_alone": float(np.clip(share_alone_raw, 0.0, 1.0)),
                "share_step_minus_fixed_raw": share_diff_raw,
                "share_assign_alone_raw": share_alone_raw,
                "step": step,
                "fixed_step": fixed,
                "assign": alone,
                **extra[assigner],
            }
        )

    return {
        "benchmark": "train_step",
        **harness.report_header(name, slug, jax.devices()[0], load_before, "flax", "optax"),
        "settings": {
            "preset": args.preset,
            "dtype": args.dtype,
            "image_size": [height, width],
            "batch": args.batch,
            "max_gt": args.max_gt,
            "num_classes": args.num_classes,
            "num_anchors": num_anchors,
            "repeats": args.repeats,
            "seed": args.seed,
            "quick": args.quick,
            "assigners": list(args.assigners),
            "fixed_assignment_from": fixed_from,
            "optimizer": "OptimizerConfig() (SGD momentum 0.9, weight decay 1e-4)",
            "timing": "median of repeats after one warm-up (compile) call, variants "
            "interleaved; jax.block_until_ready",
            "shares": "(step - fixed_step) / step and assign / step, clipped to [0, 1] "
            "(raw values in *_raw)",
        },
        "results": results,
    }


# --------------------------------------------------------------------------- output


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| assigner | step | step, fixed assignment | assignment alone "
        "| share (step - fixed) / step | share alone / step |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        times = [harness.fmt_ms(row[key]) for key in ("step_ms", "fixed_step_ms", "assign_ms")]
        shares = [
            f"{100 * row[key]:.1f}%" for key in ("share_step_minus_fixed", "share_assign_alone")
        ]
        lines.append("| " + " | ".join([row["assigner"], *times, *shares]) + " |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    s = report["settings"]
    header = (
        f"{harness.markdown_header(report)}; FCOS-{s['preset']} ({s.get('dtype', 'float32')}) "
        f"{s['image_size'][0]}x{s['image_size'][1]}, batch {s['batch']}, max_gt {s['max_gt']}, "
        f"{s['num_anchors']} anchors"
    )
    return f"{header}\n\n{markdown_table(report['results'])}\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("tiny", "resnet18", "resnet50"), default=None)
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="the model's compute dtype (assignment is always float32)",
    )
    parser.add_argument("--image-size", nargs=2, type=int, metavar=("H", "W"), default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--max-gt", type=int, default=None)
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--assigners",
        default=",".join(ASSIGNER_NAMES),
        help="comma list of ota,simota (any registered ones)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default=None,
        help="JSON path (default: benchmarks/results/<device>/train_step.json; "
        "quick: train_step_quick.json)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny model, 64x64, batch 2, 2 repeats (seconds)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    if args.preset is None:
        args.preset = "tiny" if quick else "resnet50"
    if args.image_size is None:
        args.image_size = [64, 64] if quick else [800, 1344]
    if args.batch is None:
        args.batch = 2 if quick else 16
    if args.max_gt is None:
        args.max_gt = 8 if quick else 100
    if args.repeats is None:
        args.repeats = 2 if quick else 10
    from ota_jax.assigners import ASSIGNERS

    args.assigners = [a.strip() for a in args.assigners.split(",") if a.strip()]
    for assigner in args.assigners:
        if assigner not in ASSIGNERS:
            parser.error(f"unknown assigner {assigner!r}; one of {', '.join(ASSIGNERS)}")
    if args.repeats < 1 or args.batch < 1 or args.max_gt < 1:
        parser.error("--repeats, --batch and --max-gt must be positive")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    report = run(args)
    print(markdown_report(report))
    out = args.out or harness.default_out("train_step", report["device_slug"], args.quick)
    report = harness.write_report(out, report, markdown_report(report))
    harness.log(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
