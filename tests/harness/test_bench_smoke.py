"""The benchmark (benchmarks/): workloads, the PyTorch reference loops, the script.

* The PyTorch loops of ``benchmarks/torch_loops.py`` agree with the float64
  NumPy reference of ``benchmarks/reference.py`` on small random images.
* ``benchmarks/assign_bench.py --quick`` runs every registered assigner, writes a
  complete JSON and markdown, and ota_jax agrees with the loops on the quick workload.
* ``--torch-budget-s`` times the loop on fewer images and scales its time to the batch.
* ``benchmarks/harness.py`` times calls: the first apart, rounds interleaving the rest,
  each result released before the next call.
* ``benchmarks/trace_assign.py`` records a profiler trace and sums it by op.
* ``benchmarks/agreement_float64.py`` compares ota_jax and the loop with float64.
* ``benchmarks/bucket_ablation.py`` times each bucket variant in its own process.
* ``benchmarks/plot_speedups.py`` draws the reports' speed-ups, read as the docs read them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import workloads
from benchmarks.reference import ota_reference, simota_reference


def _agreement(reference: np.ndarray, test: np.ndarray) -> float:
    positive = reference >= 0
    return float((test[positive] == reference[positive]).mean()) if positive.any() else 1.0


# --------------------------------------------------------------------------- workloads


def test_workloads_deterministic_and_well_formed():
    first = workloads.make_workload("tiny320", 3, seed=1)
    again = workloads.make_workload("tiny320", 3, seed=1)
    other = workloads.make_workload("tiny320", 3, seed=2)
    for key, value in first.arrays().items():
        np.testing.assert_array_equal(value, again.arrays()[key])
    assert not np.array_equal(first.pred_boxes, other.pred_boxes)

    spec = first.spec
    num_anchors = first.num_anchors
    assert first.points.shape == (num_anchors, 2) and first.strides.shape == (num_anchors,)
    assert first.pred_boxes.shape == (3, num_anchors, 4)
    assert first.cls_logits.shape == (3, num_anchors, spec.num_classes)
    assert first.obj_logits.shape == (3, num_anchors)
    assert first.gt_boxes.shape == (3, spec.max_gt, 4)
    assert first.gt_mask.dtype == bool and first.gt_labels.dtype == np.int32
    counts = first.gt_mask.sum(axis=1)
    assert (counts >= 1).all() and (counts <= spec.max_gt).all()
    # Real gts first, padding zero.
    for row, count in zip(first.gt_mask, counts, strict=True):
        assert row[:count].all() and not row[count:].any()
    assert (first.gt_boxes[~first.gt_mask] == 0).all()
    real = first.gt_boxes[first.gt_mask]
    assert (real[:, 2:] > real[:, :2]).all()
    assert (first.pred_boxes[..., 2:] > first.pred_boxes[..., :2]).all()
    assert np.isfinite(first.cls_logits).all() and np.isfinite(first.obj_logits).all()


def test_workload_sizes_match_benchmarks_md():
    expected = {"yolox640": 8400, "fcos1024": 21824, "crowd100": 8400}
    for name, num_anchors in expected.items():
        spec = workloads.WORKLOADS[name]
        sizes = [-(-spec.image_size[0] // s) * -(-spec.image_size[1] // s) for s in spec.strides]
        assert sum(sizes) == num_anchors, name
        assert spec.num_classes == 80
    assert workloads.WORKLOADS["crowd100"].num_gt == 100


# --------------------------------------------------------------------------- torch loops


def _images(num_images: int = 2):
    """A few tiny320 images plus one with a gt smaller than the finest stride
    lying between anchor centres (no OTA candidate at all)."""
    work = workloads.make_workload("tiny320", num_images, seed=7)
    images = []
    for b in range(num_images):
        mask = work.gt_mask[b]
        images.append(
            dict(
                pred_boxes=work.pred_boxes[b],
                cls_logits=work.cls_logits[b],
                obj_logits=work.obj_logits[b],
                points=work.points,
                strides=work.strides,
                gt_boxes=work.gt_boxes[b, mask],
                gt_labels=work.gt_labels[b, mask],
            )
        )
    tiny = dict(images[0])
    # Anchor centres of stride 8 sit at 4 + 8k: [9, 11] x [9, 11] holds none.
    tiny["gt_boxes"] = np.concatenate(
        [tiny["gt_boxes"], np.array([[9.0, 9.0, 11.0, 11.0]], np.float32)]
    )
    tiny["gt_labels"] = np.concatenate([tiny["gt_labels"], np.array([3], np.int32)])
    images.append(tiny)
    return images


def _torch_image(image: dict):
    import torch

    out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in image.items()}
    out["gt_labels"] = out["gt_labels"].long()
    return out


def _args(image: dict) -> tuple:
    """The one-image loops' positional arguments, in their order."""
    keys = ("pred_boxes", "cls_logits", "points", "strides", "gt_boxes", "gt_labels")
    return tuple(image[key] for key in keys)


@pytest.mark.torch
@pytest.mark.parametrize("shift_rows", [True, False])
def test_torch_ota_loop_matches_reference(shift_rows):
    from benchmarks import torch_loops

    for image in _images():
        t = _torch_image(image)
        got = torch_loops.ota_assign_image(*_args(t), iou_eps=1e-6, shift_rows=shift_rows).numpy()
        ref = ota_reference(*_args(image), iou_eps=1e-6, subtract_row_min=shift_rows)
        if not shift_rows and not ref["candidate_mask"].any(axis=1).all():
            # Unshifted, a candidate-less gt's row sits near 1e6 where float32 is
            # rounding noise (ASSIGNERS.md); compare the other gts' anchors only.
            lone = np.flatnonzero(~ref["candidate_mask"].any(axis=1))
            keep = ~np.isin(ref["gt_index"], lone) & ~np.isin(got, lone)
            assert _agreement(ref["gt_index"][keep], got[keep]) >= 0.99
            continue
        assert (got >= 0).sum() == (ref["gt_index"] >= 0).sum()
        assert _agreement(ref["gt_index"], got) >= 0.99
        np.testing.assert_array_equal(got, ref["gt_index"])


@pytest.mark.torch
@pytest.mark.parametrize("variant", ["2023", "2021"])
@pytest.mark.parametrize("with_obj", [True, False])
def test_torch_simota_loop_matches_reference(variant, with_obj):
    from benchmarks import torch_loops

    reference_kwargs = (
        {"prior": "center", "center_radius": 1.5, "penalty": 1e6}
        if variant == "2023"
        else {"prior": "box_and_center", "center_radius": 2.5, "penalty": 1e5}
    )
    for image in _images():
        t = _torch_image(image)
        got = torch_loops.simota_assign_image(
            *_args(t), t["obj_logits"] if with_obj else None, variant=variant
        ).numpy()
        ref = simota_reference(
            *_args(image),
            obj_logits=image["obj_logits"] if with_obj else None,
            **reference_kwargs,
        )
        np.testing.assert_array_equal(got, ref["gt_index"])


@pytest.mark.torch
def test_torch_loops_batch_indices_are_padded_slots():
    import torch

    from benchmarks import torch_loops

    work = workloads.make_workload("tiny320", 2, seed=3)
    t = work.to_torch()
    # Move the real gts of image 0 to the end of the padding: the loop must
    # report padded slot indices, not positions among the real gts.
    perm = torch.arange(work.spec.max_gt).flip(0)
    args = [t["pred_boxes"], t["cls_logits"], t["points"], t["strides"]]
    gts = [t["gt_boxes"], t["gt_labels"], t["gt_mask"]]
    flipped = [g.clone() for g in gts]
    for g, f in zip(gts, flipped, strict=True):
        f[0] = g[0][perm]
    for loop, extra in ((torch_loops.ota_loop, {}), (torch_loops.simota_loop, {})):
        if loop is torch_loops.simota_loop:
            extra = {"obj_logits": t["obj_logits"]}
        base = loop(*args, *gts, **extra)
        moved = loop(*args, *flipped, **extra)
        assert base.shape == (2, work.num_anchors) and base.dtype == torch.int64
        expected = torch.where(base[0] >= 0, perm[base[0].clamp(min=0)], base[0])
        assert torch.equal(moved[0], expected)
        assert torch.equal(moved[1], base[1])
        assert (base[0] >= 0).any()


# --------------------------------------------------------------------------- the script


REQUIRED_TOP = {
    "device",
    "device_slug",
    "jax_backend",
    "versions",
    "date",
    "command",
    "settings",
    "configs",
    "workloads",
    "results",
}
REQUIRED_JAX_ROW = {
    "workload",
    "assigner",
    "batch",
    "num_anchors",
    "torch_loop",
    "jax_ms",
    "jax_ms_all",
    "jax_first_call_ms",
    "jax_peak_bytes",
    "jax_memory_method",
    "jax_xla_temp_bytes",
}
REQUIRED_ROW = REQUIRED_JAX_ROW | {
    "torch_images",
    "torch_ms_measured",
    "torch_ms",
    "torch_ms_all",
    "jax_ms",
    "jax_ms_all",
    "jax_first_call_ms",
    "speedup",
    "agreement",
    "ref_positives",
    "same_gt",
    "extra",
    "torch_peak_bytes",
    "torch_memory_method",
    "jax_peak_bytes",
    "jax_memory_method",
    "jax_xla_temp_bytes",
}


def _table(markdown: str) -> dict[tuple[str, str], dict[str, str]]:
    """The markdown table's rows by (workload, assigner), each as {column: cell}."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines[1:]
    ]
    return {(r["workload"], r["assigner"]): r for r in rows}


def test_time_calls_releases_each_timed_result_before_the_next_call():
    """A timed call must not run while the previous call's result is still held (on an
    H100 that coincided with SimOTA taking twice as long); the first call's is kept."""
    import weakref

    from benchmarks import harness

    class Result:
        pass

    made, alive_at_call = [], []

    def call():
        alive_at_call.append(sum(ref() is not None for ref in made))
        result = Result()
        made.append(weakref.ref(result))
        return result

    (timing,) = harness.time_calls({"jax": call}, repeats=4, warmup=1, keep_first=True).values()
    assert len(made) == 6 and len(timing.times_ms) == 4
    assert timing.result is made[0]()  # the first call's result
    assert timing.first_ms > 0 and timing.median_ms >= timing.min_ms > 0
    # Each call sees only that kept result alive, never the one before it.
    assert alive_at_call == [0, 1, 1, 1, 1, 1]


def test_time_calls_interleaves_and_spreads_the_repeats():
    """Rounds interleave the calls; a call with more repeats spreads them over the rounds
    of the one with the fewest; each call runs once first and ``warmup`` more untimed."""
    from benchmarks import harness

    order = []
    calls = {key: (lambda key=key: order.append(key)) for key in ("a", "b")}
    timings = harness.time_calls(calls, repeats={"a": 2, "b": 4}, warmup=1)
    assert order == ["a", "a", "b", "b", "a", "b", "b", "a", "b", "b"]
    assert [len(t.times_ms) for t in timings.values()] == [2, 4]
    assert all(t.result is None for t in timings.values())


@pytest.mark.torch
def test_bench_quick_writes_complete_json(tmp_path, capsys):
    from benchmarks import assign_bench
    from ota_jax.assigners import ASSIGNERS

    out = tmp_path / "quick.json"
    assign_bench.main(["--quick", "--out", str(out)])
    report = json.loads(out.read_text())
    assert REQUIRED_TOP <= set(report)
    assert {"jax", "torch", "numpy"} <= set(report["versions"])
    assert report["settings"]["quick"] and report["settings"]["batch"] == 2
    assert report["settings"]["assigners"] == list(ASSIGNERS)
    rows = report["results"]
    assert {(r["workload"], r["assigner"]) for r in rows} == {
        (name, assigner) for name in workloads.QUICK_WORKLOADS for assigner in ASSIGNERS
    }
    for row in rows:
        with_loop = row["assigner"] in assign_bench.TORCH_LOOPS
        assert row["torch_loop"] == with_loop
        missing = (REQUIRED_ROW if with_loop else REQUIRED_JAX_ROW) - set(row)
        assert not missing, (row["workload"], row["assigner"], missing)
        assert row["jax_ms"] > 0
        if with_loop:
            assert row["torch_ms"] > 0 and row["torch_images"] == row["batch"]
            assert row["ref_positives"] > 0
            assert row["agreement"] >= 0.999, row
        else:
            assert not {"torch_ms", "agreement", "speedup"} & set(row), row
    ota_row = next(r for r in rows if r["assigner"] == "ota")
    assert "vs_row_shifted_loop" in ota_row
    table = capsys.readouterr().out
    assert "| workload | assigner |" in table and "tiny320" in table
    markdown = out.with_suffix(".md").read_text()
    assert report["device"] in markdown.splitlines()[0] and report["command"] in markdown
    cells = _table(markdown)
    assert set(cells) == {(r["workload"], r["assigner"]) for r in rows}
    for (_, assigner), row in cells.items():
        if assigner in assign_bench.TORCH_LOOPS:
            assert row["torch images"] == "2/2" and row["speed-up"].endswith("x")
        else:
            assert row["speed-up"] == row["agreement"] == row["torch time"] == "—"
            assert row["jax time"] not in ("—", "n/a")


@pytest.mark.slow
@pytest.mark.torch
def test_bench_torch_budget_times_fewer_images(tmp_path):
    import ota_jax
    from benchmarks import assign_bench

    out = tmp_path / "budget.json"
    argv = ["--quick", "--workloads", "tinycrowd", "--assigners", "ota", "--memory", "none"]
    report = assign_bench.main([*argv, "--torch-budget-s", "1e-6", "--out", str(out)])
    (row,) = report["results"]
    assert row["batch"] == 2 and row["torch_images"] == 1
    assert row["torch_ms"] == pytest.approx(2 * row["torch_ms_measured"])
    assert row["speedup"] == pytest.approx(row["torch_ms"] / row["jax_ms"])
    # Agreement over the one image the loop ran: ota_jax's positives of image 0.
    work = workloads.make_workload("tinycrowd", 2).to_jax()
    args = [work[k] for k in assign_bench.ARG_KEYS]
    gt_index = np.asarray(ota_jax.ota_assign_batch(*args).gt_index)
    assert row["positives"] == (gt_index[0] >= 0).sum() != (gt_index >= 0).sum()
    assert row["agreement"] >= 0.999
    markdown = out.with_suffix(".md").read_text()
    assert _table(markdown)[("tinycrowd", "ota")]["torch images"] == "1/2"
    assert "first n images only" in markdown


@pytest.mark.torch
@pytest.mark.slow
def test_bench_memory_probe_subprocess():
    from benchmarks import assign_bench

    args = assign_bench.parse_args(["--quick"])
    for side in ("jax", "torch"):
        probe = assign_bench.measure_memory(side, "ota", "tiny320", args, images=1)
        assert "probe failed" not in probe["memory_method"], probe
        assert probe["peak_bytes"] is None or probe["peak_bytes"] >= 0


# --------------------------------------------------------------------------- trace


def test_trace_assign_sums_the_recorded_ops(tmp_path):
    from benchmarks import trace_assign

    argv = "--assigner simota --workload tiny320 --batch 2 --calls 2 --top 5 --out-dir"
    summary = trace_assign.main([*argv.split(), str(tmp_path)])
    assert summary["where"] == "host"  # the tests run on a CPU
    assert summary["ops_per_call"] > 0 and len(summary["top"]) == 5
    times = [row["us_per_call"] for row in summary["top"]]
    assert times == sorted(times, reverse=True) and times[0] > 0
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["device"] in (tmp_path / "summary.md").read_text().splitlines()[0]


# --------------------------------------------------------------------------- float64


@pytest.mark.torch
def test_agreement_float64_on_small_images(tmp_path):
    from benchmarks import agreement_float64

    out = tmp_path / "agreement.json"
    report = agreement_float64.main(["--workload", "tiny320", "--images", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    assert report["device"] in out.with_suffix(".md").read_text().splitlines()[0]
    rows = report["results"]
    assert [row["image"] for row in rows] == [0, 1]
    for row in rows:
        assert row["reference_positives"] > 0
        for key in ("ota_jax_vs_float64", "torch_loop_vs_float64", "ota_jax_vs_torch_loop"):
            assert row[key] == {"agreement": 1.0, "different": 0, "extra": 0}, (key, row)


def test_bucket_ablation_variants_may_carry_xla_flags_with_commas():
    from benchmarks import bucket_ablation

    flags = "off:--xla_gpu_enable_command_buffer=FUSION,CUBLAS --xla_dump_to=a,b"
    assert bucket_ablation.split_variants(f"auto,{flags},cpu:--x=1,accelerator") == [
        "auto",
        flags,
        "cpu:--x=1",
        "accelerator",
    ]


@pytest.mark.slow
def test_bucket_ablation_runs_each_variant_in_its_own_process(tmp_path):
    from benchmarks import bucket_ablation

    out = tmp_path / "buckets.json"
    argv = "--workloads tiny320 --assigners simota --variants auto,off --batch 2 --repeats 2"
    report = bucket_ablation.run([*argv.split(), "--quick", "--out", str(out)])
    rows = report["rows"]
    assert [(r["variant"], r["assigner"]) for r in rows] == [("auto", "simota"), ("off", "simota")]
    assert all(r["first_call_s"] > 0 and r["ms"] >= r["ms_min"] > 0 for r in rows)
    assert json.loads(out.read_text())["rows"] == rows
    assert "| tiny320 | simota | off | — |" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_bucket_ablation_keeps_the_variants_finished_before_one_fails(tmp_path):
    from benchmarks import bucket_ablation

    out = tmp_path / "buckets.json"
    argv = "--workloads tiny320 --assigners simota --batch 2 --repeats 2 --quick"
    # The second variant's child fails: its XLA flag does not exist.
    variants = "off,off:--xla_no_such_flag=1"
    with pytest.raises(RuntimeError, match="no_such_flag"):
        bucket_ablation.run([*argv.split(), "--variants", variants, "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["complete"] is False
    assert [r["variant"] for r in report["rows"]] == ["off"]
    assert "(incomplete: the variants run so far)" in out.with_suffix(".md").read_text()


def test_plot_speedups_reads_the_rows_with_a_loop_and_draws_a_png(tmp_path):
    from benchmarks import plot_speedups

    def report(name, commit, rows, nest=False):
        body = {"jax_backend": "cpu", "git_commit": commit, "results": rows}
        path = tmp_path / name
        path.write_text(json.dumps({"assign": body} if nest else body))
        return path

    row = lambda workload, assigner, speedup: dict(
        workload=workload, assigner=assigner, speedup=speedup
    )
    first = report(
        "a.json",
        "aaaaaaaaaa",
        [row("crowd100", "ota", 20.0), row("crowd100", "simota", 3.0), row("w1", "fcos", None)],
    )
    second = report("b.json", "bbbbbbbbbb", [row("yolox640", "simota", 12.0)], nest=True)
    without = report("c.json", "ccccccccc", [row("yolox640", "fcos", None)])
    runs = plot_speedups.speedups([first, second, without])
    # Workloads come in the order of workloads.WORKLOADS; a report without a loop's row
    # is not named.
    assert {k: r["speedup"] for k, r in runs.rows.items()} == {
        ("yolox640", "simota"): 12.0,
        ("crowd100", "ota"): 20.0,
        ("crowd100", "simota"): 3.0,
    }
    assert [w for w, _ in runs.rows] == ["yolox640", "crowd100", "crowd100"]
    assert runs.backend == "cpu" and runs.commits == ("aaaaaaa", "bbbbbbb")
    # A pair in two reports: which one counts would be a guess.
    again = report("d.json", "ddddddddd", [row("crowd100", "ota", 9.0)])
    with pytest.raises(ValueError, match="crowd100"):
        plot_speedups.speedups([first, again])
    out = plot_speedups.plot([("cpu", runs), ("again", runs)], tmp_path / "speedups.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="TITLE=FILE"):
        plot_speedups.parse_panel("no files")


def test_git_commit_falls_back_to_the_environment(tmp_path, monkeypatch):
    """A copy of the tree without .git (a device machine, some CI) names its commit."""
    from benchmarks import harness

    assert harness.git_commit()  # this checkout
    monkeypatch.setattr(harness, "_ROOT", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.setenv("GIT_COMMIT", "0123abc")
    assert harness.git_commit() == "0123abc"
    monkeypatch.delenv("GIT_COMMIT")
    assert harness.git_commit() is None


def test_a_report_says_when_its_files_differ_from_its_commit(tmp_path, monkeypatch):
    import subprocess

    from benchmarks import harness

    git = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, check=True)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "suite.json").write_text("{}")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    monkeypatch.setattr(harness, "_ROOT", tmp_path)
    assert harness.git_dirty() is False
    (tmp_path / "benchmarks" / "results" / "suite.json").write_text('{"new": 1}')
    (tmp_path / "untracked.py").write_text("")
    assert harness.git_dirty() is False  # a run rewrites its reports
    (tmp_path / "code.py").write_text("x = 2\n")
    assert harness.git_dirty() is True
    report = {"device": "cpu", "date": "d", "command": "c", "git_commit": "a" * 40}
    assert "(files changed since)" not in harness.markdown_header(report)
    assert "(files changed since)" in harness.markdown_header({**report, "git_dirty": True})
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    (tmp_path / ".git").rename(tmp_path / "not_git")
    assert harness.git_dirty() is None


def test_reports_go_to_their_device_folder_and_quick_ones_stay_out_of_git():
    import subprocess

    from benchmarks import harness

    real = harness.default_out("assign", "cpu-2core", quick=False)
    quick = harness.default_out("assign", "cpu-2core", quick=True)
    assert real == harness.RESULTS / "cpu-2core" / "assign.json"
    assert quick == harness.RESULTS / "cpu-2core" / "assign_quick.json"
    ignored = lambda path: (
        subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=harness.RESULTS).returncode
    )
    assert ignored(quick) == 0 and ignored(quick.with_suffix(".md")) == 0
    assert ignored(real) == 1


def test_idle_gaps_sums_the_gaps_inside_calls_and_names_their_kernels():
    from benchmarks import trace_assign

    def kernel(name, start, duration):
        return {"name": name, "ts": start, "dur": duration}

    pause = trace_assign._PAUSE_S * 1e6  # microseconds between recorded calls
    events = [
        # Call 1: a 30 us gap after "b", kernels "c" and "d" overlapping on two streams.
        kernel("a", 0, 10),
        kernel("b", 10, 5),
        kernel("c", 45, 20),
        kernel("d", 50, 30),
        kernel("g", 55, 2),  # starts after "d", ends first: the gap before "e" is after "d"
        kernel("e", 82, 1),
        # Call 2, after the pause: a 10 us gap after "a".
        kernel("a", pause, 10),
        kernel("f", pause + 20, 5),
    ]
    gaps = trace_assign.idle_gaps(events[::-1], calls=2, top=2)  # any order
    assert gaps["idle_us_per_call"] == pytest.approx((30 + 2 + 10) / 2)
    assert [(g["us"], g["after"], g["before"]) for g in gaps["longest_gaps"]] == [
        (30, "b", "c"),
        (10, "a", "f"),
    ]
    third = trace_assign.idle_gaps(events, calls=2, top=3)["longest_gaps"][2]
    assert (third["us"], third["after"], third["before"]) == (2, "d", "e")
