"""Assigner configs are pytrees: float fields traced, the rest static.

Counted with JAX's own compile events (`tests.compiles`): a sweep over a float hyperparameter must
compile nothing new, a change of a static field must.
"""

import dataclasses

import jax
import numpy as np
import pytest

import ota_jax
from tests.compiles import COUNTER
from tests.scenes import make_scene

pytestmark = pytest.mark.core  # Needs only the core dependencies.

ASSIGNERS = ota_jax.assigners.ASSIGNERS


def _floats(config) -> dict[str, float]:
    """The traced fields, as the pytree's leaves say."""
    names = [f.name for f in dataclasses.fields(config)]
    leaves = jax.tree_util.tree_flatten_with_path(config)[0]
    traced = {path[0].name for path, _ in leaves}
    return {n: getattr(config, n) for n in names if n in traced}


@pytest.fixture(scope="module")
def batch():
    scene = make_scene(np.random.default_rng(0), num_gt=3, image_size=(64, 64))
    stack = lambda x: np.asarray(x)[None].repeat(2, 0)
    return (
        stack(scene.pred_boxes),
        stack(scene.cls_logits),
        scene.points,
        scene.strides,
        stack(scene.gt_boxes),
        stack(scene.gt_labels),
        np.ones((2, 3), bool),
    )


def test_the_documented_hyperparameters_are_traced():
    expected = {
        "ota": {"center_radius", "reg_weight", "epsilon", "focal_alpha", "penalty"},
        "simota": {"center_radius", "iou_weight", "penalty"},
        "tal": {"alpha", "beta"},
        "max_iou": {"pos_iou_thr", "neg_iou_thr", "anchor_scale"},
        "dsl": {"iou_weight", "soft_center_radius"},
        "atss": {"anchor_scale"},
        "fcos": {"center_radius"},
    }
    for name, fields in expected.items():
        assert fields <= set(_floats(ASSIGNERS[name].config_class())), name
    # What fixes shapes or control flow stays static.
    assert "num_iters" not in _floats(ota_jax.OTAConfig())
    assert "candidate_topk" not in _floats(ota_jax.SimOTAConfig())


@pytest.mark.parametrize("name", list(ASSIGNERS))
def test_changing_a_float_field_compiles_nothing_new(name, batch):
    spec = ASSIGNERS[name]
    default = spec.config_class()
    first = spec.assign_batch(*batch, config=default)
    jax.block_until_ready(first)
    # Each float nudged, all at once, a valid config still.
    nudged = dataclasses.replace(default, **{n: v * 0.9 for n, v in _floats(default).items()})
    with COUNTER:
        again = spec.assign_batch(*batch, config=nudged)
        jax.block_until_ready(again)
    assert COUNTER.count == 0, f"{name}: {COUNTER.count} compilations for new float values"


def test_the_traced_values_are_used_and_static_fields_recompile(batch):
    loose = ota_jax.OTAConfig(center_radius=2.5)
    tight = ota_jax.OTAConfig(center_radius=0.3)  # traced: fewer candidates, fewer positives
    fg = lambda config: int(
        np.asarray(ota_jax.ota_assign_batch(*batch, config=config).num_fg).sum()
    )
    assert fg(tight) < fg(loose)
    with COUNTER:
        fg(dataclasses.replace(loose, num_iters=7))
    assert COUNTER.count > 0


def test_a_config_validates_its_values_but_not_tracers():
    with pytest.raises(ValueError):
        ota_jax.OTAConfig(epsilon=-1.0)
    # Rebuilt by JAX from traced leaves: nothing to check, nothing raised.
    traced = jax.jit(lambda c: c)(ota_jax.OTAConfig(epsilon=0.5))
    assert float(traced.epsilon) == 0.5
