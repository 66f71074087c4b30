"""ota_jax.viz: what each picture draws, read back from the returned figure's artists."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import imread  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from ota_jax import viz  # noqa: E402

# Two levels on a 32x32 canvas: stride 8 (16 points) then stride 16 (4 points).
POINTS = np.array(
    [[x + 4.0, y + 4.0] for y in range(0, 32, 8) for x in range(0, 32, 8)]
    + [[x + 8.0, y + 8.0] for y in range(0, 32, 16) for x in range(0, 32, 16)],
    np.float32,
)
STRIDES = np.array([8.0] * 16 + [16.0] * 4, np.float32)
GT_BOXES = np.array([[0, 0, 16, 16], [16, 16, 32, 32], [0, 0, 0, 0]], np.float32)
GT_MASK = np.array([True, True, False])
GT_INDEX = np.full(20, -1)
GT_INDEX[[0, 1, 4, 16]] = 0  # Three stride-8 points and one stride-16 point.
GT_INDEX[[10, 15]] = 1  # Two stride-8 points.


def _scatter(ax, label):
    (collection,) = [c for c in ax.collections if c.get_label() == label]
    return collection


def _gt_rectangles(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_import_ota_jax_does_not_need_matplotlib():
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # Any matplotlib import fails.
        "import ota_jax\n"
        "assert 'ota_jax.viz' not in sys.modules\n"
        "try:\n"
        "    import ota_jax.viz\n"
        "except ImportError:\n"
        "    print('viz needs matplotlib')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert "viz needs matplotlib" in out.stdout


def test_plot_assignment_one_panel_per_level():
    figure = viz.plot_assignment(None, GT_BOXES, GT_MASK, POINTS, STRIDES, GT_INDEX)
    assert isinstance(figure, Figure)
    axes = figure.axes
    assert len(axes) == 2
    assert axes[0].get_title() == "stride 8: 5 positives"
    assert axes[1].get_title() == "stride 16: 1 positives"
    colours = viz.gt_colours(3)
    for ax, expected in zip(axes, ([0, 0, 0, 1, 1], [0]), strict=True):
        rectangles = _gt_rectangles(ax)
        assert len(rectangles) == 2  # The padded third gt is not drawn.
        for i, rectangle in enumerate(rectangles):
            np.testing.assert_allclose(rectangle.get_edgecolor(), colours[i])
        positives = _scatter(ax, "positive")
        np.testing.assert_allclose(positives.get_facecolors(), [colours[i] for i in expected])
        assert positives.get_offsets().shape == (len(expected), 2)
    # Background points of both levels: 20 anchors less 6 positives.
    background = [len(_scatter(ax, "background").get_offsets()) for ax in axes]
    assert background == [16 - 5, 4 - 1]
    np.testing.assert_allclose(
        _scatter(axes[0], "background").get_facecolors()[0], viz.BACKGROUND_COLOUR
    )


def test_plot_assignment_single_panel_on_an_image_and_given_axes():
    image = np.zeros((32, 48, 3), np.uint8)
    figure = Figure()
    ax = figure.add_subplot()
    out = viz.plot_assignment(
        image, GT_BOXES, None, POINTS, STRIDES, GT_INDEX, levels=False, ax=ax, title="scene"
    )
    assert out is figure
    assert len(ax.images) == 1
    assert ax.get_xlim() == (0.0, 48.0)
    assert ax.get_ylim() == (32.0, 0.0)  # Image coordinates: y grows downwards.
    assert len(_gt_rectangles(ax)) == 3  # gt_mask=None: every gt is real.
    assert len(_scatter(ax, "positive").get_offsets()) == 6
    assert figure.get_suptitle() == "scene"
    with pytest.raises(ValueError, match="expected 2 axes"):
        viz.plot_assignment(None, GT_BOXES, GT_MASK, POINTS, STRIDES, GT_INDEX, ax=ax)


def test_plot_candidates_colours_the_first_gt_and_rings_shared_anchors():
    candidates = np.zeros((3, 20), bool)
    candidates[0, [0, 1, 4, 16]] = True
    candidates[1, [4, 10, 15, 16]] = True  # Anchors 4 (stride 8) and 16 (stride 16) shared.
    candidates[2, [2, 3]] = True  # A padding gt: ignored.
    figure = viz.plot_candidates(None, GT_BOXES, GT_MASK, POINTS, STRIDES, candidates)
    axes = figure.axes
    assert [ax.get_title() for ax in axes] == [
        "stride 8: 5 candidates, 1 shared",
        "stride 16: 1 candidates, 1 shared",
    ]
    colours = viz.gt_colours(3)
    np.testing.assert_allclose(
        _scatter(axes[0], "positive").get_facecolors(), [colours[i] for i in (0, 0, 0, 1, 1)]
    )
    np.testing.assert_allclose(_scatter(axes[0], "shared").get_offsets(), POINTS[[4]])
    np.testing.assert_allclose(_scatter(axes[1], "shared").get_offsets(), POINTS[[16]])
    figure = viz.plot_candidates(
        None, GT_BOXES, None, POINTS, STRIDES, candidates, levels=False, title="priors"
    )
    (ax,) = figure.axes
    assert ax.get_title() == "all levels: 8 candidates, 2 shared"  # gt 2 is real now.
    assert figure.get_suptitle() == "priors"
    with pytest.raises(ValueError, match="candidates has 5 anchors"):
        viz.plot_candidates(None, GT_BOXES, GT_MASK, POINTS, STRIDES, candidates[:, :5])


def test_plot_cost_terms_three_panels_over_the_candidates():
    rng = np.random.default_rng(0)
    class_cost = rng.uniform(0.0, 2.0, (3, 8)).astype(np.float32)
    reg_cost = rng.uniform(0.0, 4.0, (3, 8)).astype(np.float32)
    background = rng.uniform(0.0, 1.0, 8).astype(np.float32)
    candidates = np.zeros((3, 8), bool)
    candidates[0, [1, 2]] = True
    candidates[1, [2, 5]] = True
    candidates[2, [0, 7]] = True  # Padding: its anchors are not shown.
    figure = viz.plot_cost_terms(
        class_cost, reg_cost, background, candidates, gt_mask=[True, True, False], reg_weight=2.0
    )
    class_ax, reg_ax, total_ax = figure.axes[:3]
    assert [ax.get_title() for ax in (class_ax, reg_ax, total_ax)] == [
        "classification",
        "regression",
        "class + 2 x regression",
    ]
    for ax in (class_ax, reg_ax, total_ax):
        assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "bg"]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "5"]
    shown = {
        ax.get_title(): np.ma.filled(ax.images[0].get_array(), np.nan)
        for ax in (class_ax, reg_ax, total_ax)
    }
    np.testing.assert_allclose(shown["classification"][0, :2], class_cost[0, [1, 2]])
    np.testing.assert_allclose(shown["classification"][2], background[[1, 2, 5]])
    assert np.isnan(shown["regression"][2]).all()  # No regression term for the background.
    total = class_cost + 2.0 * reg_cost
    expected = np.array(
        [
            [total[0, 1], total[0, 2], np.nan],  # Not candidates: blank in every panel.
            [np.nan, total[1, 2], total[1, 5]],
            background[[1, 2, 5]],
        ]
    )
    np.testing.assert_array_equal(np.isnan(shown["classification"][:2]), np.isnan(expected[:2]))
    np.testing.assert_allclose(shown["regression"][1, 1:], reg_cost[1, [2, 5]])
    np.testing.assert_allclose(shown["class + 2 x regression"], expected, rtol=1e-6)
    # Without candidates every pair counts. gt 0 is cheap on anchors 0 and 1, gt 1 is
    # expensive everywhere but least on anchor 5: each gt keeps its cheapest anchor.
    costs = np.full((2, 8), 9.0, np.float32)
    costs[0, [0, 1]] = [0.1, 0.2]
    costs[1, 5] = 3.0
    figure = viz.plot_cost_terms(np.zeros((2, 8)), costs, background, max_anchors=2)
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["0", "5"]
    figure = viz.plot_cost_terms(np.zeros((2, 8)), costs, background, max_anchors=3)
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["0", "1", "5"]
    with pytest.raises(ValueError, match="background_cost has 7 anchors"):
        viz.plot_cost_terms(class_cost, reg_cost, background[:7])


def _transport(num_gt=3, num_anchors=12):
    rng = np.random.default_rng(0)
    cost = rng.uniform(0.0, 5.0, (num_gt + 1, num_anchors)).astype(np.float32)
    cost[:num_gt, 6:] += 1e6  # Anchors 6.. are nobody's candidates.
    cost[0, 0] = np.inf
    plan = np.zeros_like(cost)
    plan[0, [1, 2]] = 1.0
    plan[1, 3] = 1.0
    plan[-1] = 1.0 - plan[:num_gt].sum(axis=0)
    return cost, plan


def test_plot_cost_and_plan_rows_columns_and_labels():
    cost, plan = _transport()
    figure = viz.plot_cost_and_plan(cost, plan, gt_mask=[True, True, False])
    cost_ax, plan_ax = figure.axes[:2]
    for ax in (cost_ax, plan_ax):
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels == ["0", "1", "bg"]
        assert ax.images[0].get_array().shape == (3, 6)  # Real gts + bg, candidates 0..5.
    np.testing.assert_allclose(plan_ax.images[0].get_array(), plan[[0, 1, 3], :6])
    shown_cost = np.ma.filled(cost_ax.images[0].get_array(), np.nan)
    assert np.isnan(shown_cost[0, 0])  # The infinite cost is blank.
    np.testing.assert_allclose(shown_cost[1:, :], cost[[1, 3], :6])
    assert [t.get_text() for t in cost_ax.get_xticklabels()] == [str(i) for i in range(6)]


def test_plot_cost_and_plan_all_anchors_or_the_heaviest():
    cost, plan = _transport()
    figure = viz.plot_cost_and_plan(cost, plan, relevant_only=False)
    assert figure.axes[0].images[0].get_array().shape == (4, 12)
    assert figure.axes[0].get_yticklabels()[-1].get_text() == "bg"
    figure = viz.plot_cost_and_plan(cost, plan, max_anchors=2)
    # The two columns with the most gt plan mass, kept in anchor order.
    assert [t.get_text() for t in figure.axes[1].get_xticklabels()] == ["1", "2"]
    np.testing.assert_allclose(figure.axes[1].images[0].get_array(), plan[:, [1, 2]])


def test_plot_dynamic_k_one_bar_per_real_gt():
    figure = viz.plot_dynamic_k(np.array([3, 7, 0, 5]), np.array([True, True, False, True]))
    (ax,) = figure.axes
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [b.get_height() for b in bars] == [3, 7, 5]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["gt 0", "gt 1", "gt 3"]
    colours = viz.gt_colours(4)
    np.testing.assert_allclose(bars[2].get_facecolor(), colours[3])
    figure = viz.plot_dynamic_k([1, 2], None, labels=["cat", "dog"])
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["cat", "dog"]


def test_plot_ota_vs_simota_titles_count_positives():
    simota_index = np.full(20, -1)
    simota_index[[0, 15, 19]] = [0, 1, 1]
    figure = viz.plot_ota_vs_simota(
        None, GT_BOXES, GT_MASK, POINTS, STRIDES, GT_INDEX, simota_index, image_size=(32, 32)
    )
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["OTA: 6 positives", "SimOTA: 3 positives"]
    assert len(_scatter(figure.axes[1], "positive").get_offsets()) == 3


def _write_metrics(path, records):
    with open(path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
        f.write('{"step": 9, "train/lo')  # A torn last line of a killed run.


def test_plot_training_curves_losses_and_eval(tmp_path):
    records = [
        {"step": s, "train/loss": 2.0 / s, "train/loss_cls": 1.0 / s, "train/grad_norm": 1.0}
        for s in range(1, 6)
    ]
    records[2]["train/loss"] = None  # A non-finite value, logged as null.
    records.insert(3, {"step": 3, "eval/AP": 0.1, "eval/AP50": 0.2, "eval/APs": 0.05})
    records.append({"step": 5, "eval/AP": 0.3, "eval/AP50": 0.4, "eval/APs": 0.1})
    _write_metrics(tmp_path, records)
    figure = viz.plot_training_curves(tmp_path)
    loss_ax, ap_ax = figure.axes
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    assert set(lines) == {"train/loss", "train/loss_cls"}  # Not grad_norm.
    assert list(lines["train/loss"].get_xdata()) == [1, 2, 4, 5]
    assert len(lines["train/loss_cls"].get_xdata()) == 5
    ap_lines = {line.get_label(): line for line in ap_ax.get_lines()}
    assert set(ap_lines) == {"AP", "AP50", "APs"}
    assert list(ap_lines["AP"].get_xdata()) == [3, 5]
    np.testing.assert_allclose(ap_lines["AP50"].get_ydata(), [0.2, 0.4])


def test_plot_training_curves_eval_json_and_no_eval(tmp_path):
    _write_metrics(tmp_path, [{"step": s, "train/loss": 1.0} for s in (10, 20)])
    assert len(viz.plot_training_curves(tmp_path).axes) == 1
    (tmp_path / "eval.json").write_text(json.dumps({"AP": 0.25, "AP50": 0.5}))
    _, ap_ax = viz.plot_training_curves(tmp_path).axes
    points = {line.get_label(): (*line.get_xdata(), *line.get_ydata()) for line in ap_ax.lines}
    assert points == {"AP": (20, 0.25), "AP50": (20, 0.5)}
    with pytest.raises(FileNotFoundError):
        viz.plot_training_curves(tmp_path / "missing")


def test_draws_a_real_ota_assignment(tmp_path):
    import jax.numpy as jnp

    import ota_jax

    points, strides = ota_jax.anchor_points((64, 64), strides=(8, 16))
    num_anchors = points.shape[0]
    gt_boxes = jnp.array([[4.0, 6.0, 30.0, 34.0], [32.0, 30.0, 60.0, 62.0], [0, 0, 0, 0]])
    gt_labels = jnp.array([0, 1, 0])
    gt_mask = jnp.array([True, True, False])
    pred_boxes = jnp.tile(points, (1, 2)) + jnp.array([-10.0, -10.0, 10.0, 10.0])
    cls_logits = jnp.zeros((num_anchors, 2)) - 2.0
    result = ota_jax.ota_assign(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask,
        config=ota_jax.OTAConfig(return_transport=True),
    )  # fmt: skip
    image = np.linspace(0.0, 1.0, 64 * 64 * 3).reshape(64, 64, 3)
    figure = viz.plot_assignment(image, gt_boxes, gt_mask, points, strides, result.gt_index)
    num_positive = sum(len(_scatter(ax, "positive").get_offsets()) for ax in figure.axes)
    assert num_positive == int(result.num_fg) > 0
    # Each positive point wears its gt's colour.
    colours = np.asarray(viz.gt_colours(3))
    fg = np.asarray(result.gt_index)
    drawn = np.concatenate([_scatter(ax, "positive").get_facecolors() for ax in figure.axes])
    expected = np.concatenate(
        [colours[fg[(fg >= 0) & (np.asarray(strides) == s)]] for s in (8, 16)]
    )
    np.testing.assert_allclose(drawn, expected)
    figure.savefig(tmp_path / "assignment.png")
    transport = result.transport
    figure = viz.plot_cost_and_plan(transport.cost, transport.plan, gt_mask=gt_mask)
    assert figure.axes[0].images[0].get_array().shape[0] == 3
    figure.savefig(tmp_path / "transport.png")
    viz.plot_dynamic_k(result.dynamic_k, gt_mask).savefig(tmp_path / "k.png")
    for name in ("assignment", "transport", "k"):
        data = imread(tmp_path / f"{name}.png")
        assert data.ndim == 3 and data.shape[0] > 50
