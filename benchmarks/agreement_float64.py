"""Who is closer to the spec: ota_jax and the PyTorch OTA loop against float64.

On the first ``--images`` images of a workload this runs OTA three ways: the
float64 NumPy loop of ``benchmarks/reference.py`` (ASSIGNERS.md, read as the spec),
``ota_jax.ota_assign_batch`` (float32) and the float32 PyTorch loop of
``torch_loops.py``. For each image it prints, against the float64 reference,
the share of its positive anchors each float32 version gives the same gt, the
anchors it gives another gt or the background, and the anchors it makes
positive that the reference leaves background; then the same between the loop
and ota_jax, which is what ``assign_bench.py`` reports as agreement. On crowded
images the float32 loop's own rounding accounts for most of the few anchors
where it and ota_jax differ.

Example::

    python -m benchmarks.agreement_float64 --workload crowd500 --images 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from . import assign_bench, harness
from . import workloads as wl
from .reference import ota_reference


def compare(reference: np.ndarray, test: np.ndarray) -> dict:
    """``test [A]`` against ``reference [A]`` gt indices (-1: background)."""
    positive = reference >= 0
    return {
        "agreement": float((test[positive] == reference[positive]).mean()) if positive.any() else 1,
        "different": int((test[positive] != reference[positive]).sum()),
        "extra": int(((test >= 0) & ~positive).sum()),
    }


def run(workload: str, images: int) -> list[dict]:
    import ota_jax

    from . import torch_loops

    work = wl.make_workload(workload, 16).first_images(images)
    arrays = work.arrays()
    keys = assign_bench.ARG_KEYS
    jax_index = np.asarray(ota_jax.ota_assign_batch(*(arrays[k] for k in keys)).gt_index)
    tensors = work.to_torch()
    loop_index = torch_loops.ota_loop(*(tensors[k] for k in keys)).numpy()
    rows = []
    for i in range(images):
        start = time.perf_counter()
        real = np.nonzero(arrays["gt_mask"][i])[0]
        reference = ota_reference(
            arrays["pred_boxes"][i],
            arrays["cls_logits"][i],
            arrays["points"],
            arrays["strides"],
            arrays["gt_boxes"][i][real],
            arrays["gt_labels"][i][real],
        )["gt_index"]
        reference = np.where(reference >= 0, real[np.maximum(reference, 0)], -1)  # to slots
        row = {
            "image": i,
            "gts": len(real),
            "reference_positives": int((reference >= 0).sum()),
            "ota_jax_vs_float64": compare(reference, jax_index[i]),
            "torch_loop_vs_float64": compare(reference, loop_index[i]),
            "ota_jax_vs_torch_loop": compare(loop_index[i], jax_index[i]),
        }
        harness.log(f"image {i}: {time.perf_counter() - start:.0f} s for the float64 loop")
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    cell = lambda c: f"{100 * c['agreement']:.3f}% ({c['different']} differ, {c['extra']} extra)"
    lines = [
        "| image | gts | positives | ota_jax vs float64 | loop vs float64 | ota_jax vs loop |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['image']} | {row['gts']} | {row['reference_positives']} "
            f"| {cell(row['ota_jax_vs_float64'])} | {cell(row['torch_loop_vs_float64'])} "
            f"| {cell(row['ota_jax_vs_torch_loop'])} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="crowd500", choices=sorted(wl.WORKLOADS))
    parser.add_argument("--images", type=int, default=2, help="first images of the batch")
    parser.add_argument(
        "--out",
        default=None,
        help="JSON path (default benchmarks/results/<device>/agreement_float64_<workload>.json)",
    )
    args = parser.parse_args(argv)
    import jax

    device = jax.devices()[0]
    name, slug = harness.device_name_and_slug(device)
    load_before = harness.load_average()
    rows = run(args.workload, args.images)
    report = {
        **harness.report_header(name, slug, device, load_before, "torch"),
        "benchmark": "agreement_float64",
        "settings": {"workload": args.workload, "images": args.images, "batch": 16},
        "results": rows,
    }
    markdown = f"{harness.markdown_header(report)}\n\n{markdown_table(rows)}\n"
    out = args.out or harness.default_out(f"agreement_float64_{args.workload}", slug, False)
    report = harness.write_report(out, report, markdown)
    print(markdown)
    return report


if __name__ == "__main__":
    main()
