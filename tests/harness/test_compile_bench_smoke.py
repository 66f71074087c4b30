"""`benchmarks/compile_bench.py` on a tiny workload: one process per target and policy."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_compile_bench_reports_first_and_later_calls_per_policy(tmp_path):
    from benchmarks import compile_bench
    from ota_jax import Sizes

    assert compile_bench.parse_policy("off") == "off"
    assert compile_bench.parse_policy("gt_start=16+column_start=none+max_pairs=0") == Sizes(
        gt_start=16, column_start=None
    )
    assert compile_bench.parse_policy("pairs=16x512/allx2048") == Sizes(
        pairs=((16, 512), (None, 2048))
    )
    out = tmp_path / "compile.json"
    argv = "--workload tiny320 --targets simota --policies auto,off --batch 2 --repeats 2"
    report = compile_bench.run([*argv.split(), "--warmup", "1", "--quick", "--out", str(out)])
    rows = report["rows"]
    assert [(r["target"], r["policy"]) for r in rows] == [("simota", "auto"), ("simota", "off")]
    assert all(r["first_call_s"] > 0 and r["first_call_cpu_s"] > 0 and r["ms"] > 0 for r in rows)
    assert rows[1]["first_call_vs_base"] == 1.0
    assert json.loads(out.read_text())["rows"] == rows
    assert "| simota | `off` |" in out.with_suffix(".md").read_text()
