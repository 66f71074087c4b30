"""``benchmarks/scaling.py --quick`` runs, writes its JSON and markdown, fits finite slopes."""

from __future__ import annotations

import json
import math


def test_fit_slope_recovers_power_law():
    from benchmarks import scaling

    xs = [1, 2, 4, 8]
    assert math.isclose(scaling.fit_slope(xs, [3.0 * x**1.5 for x in xs]), 1.5, rel_tol=1e-9)
    assert math.isnan(scaling.fit_slope([4, 4], [1.0, 2.0]))


def test_scaling_quick_writes_json_and_markdown(tmp_path, capsys):
    from benchmarks import scaling

    out = tmp_path / "scaling.json"
    scaling.main(["--quick", "--out", str(out)])
    report = json.loads(out.read_text())
    assert {
        "device",
        "device_slug",
        "jax_backend",
        "versions",
        "git_commit",
        "date",
        "command",
        "settings",
        "results",
        "slopes",
    } <= set(report)
    assert report["settings"]["quick"]
    rows = report["results"]
    assert {r["factor"] for r in rows} == set(scaling.FACTORS)
    assert {r["assigner"] for r in rows} == set(scaling.ASSIGNERS)
    for row in rows:
        assert {"batch", "image", "num_anchors", "gts", "max_gt", "first_call_ms"} <= set(row)
        assert row["median_ms"] > 0 and len(row["ms_all"]) == report["settings"]["repeats"]
        assert row["mean_gt"] == row["gts"]
    for factor in scaling.FACTORS:
        # Every factor varies over at least two values around the base point.
        assert len({scaling._x(r) for r in rows if r["factor"] == factor}) >= 2
    for assigner in scaling.ASSIGNERS:
        for factor in scaling.FACTORS:
            slope = report["slopes"][assigner][factor]
            assert slope is not None and math.isfinite(slope), (assigner, factor)
    markdown = out.with_suffix(".md").read_text()
    assert report["device"] in markdown.splitlines()[0]
    assert "| factor | batch | image | anchors | gts |" in markdown
    assert "| factor | batch |" in capsys.readouterr().out
