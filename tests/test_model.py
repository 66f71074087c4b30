"""The FCOS model: shapes in anchor order, box decoding, dtypes, module structure."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ota_jax.anchors import anchor_points, level_sizes
from ota_jax.detector.model import FCOS, FCOSConfig, FCOSOutput, decode_ltrb, fcos_config

NUM_CLASSES = 3


def _forward(model: FCOS, images: np.ndarray) -> FCOSOutput:
    """Jitted forward through the functional API (eager NNX dispatch is slow)."""
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, images)


@pytest.fixture(scope="module")
def tiny_model() -> FCOS:
    return FCOS(fcos_config("tiny", num_classes=NUM_CLASSES), rngs=nnx.Rngs(0))


def test_output_shapes_and_dtypes(tiny_model):
    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    out = _forward(tiny_model, images)
    num_anchors = sum(level_sizes((64, 64), (8, 16, 32)))
    assert num_anchors == 84
    assert out.cls_logits.shape == (2, num_anchors, NUM_CLASSES)
    assert out.pred_boxes.shape == (2, num_anchors, 4)
    assert out.iou_logits.shape == (2, num_anchors)
    assert out.ltrb.shape == (2, num_anchors, 4)
    for field in out:
        assert field.dtype == jnp.float32
        assert np.all(np.isfinite(field))


def test_odd_image_size_matches_anchor_grid():
    config = fcos_config("tiny", num_classes=2, strides=(8, 16, 32, 64, 128))
    model = FCOS(config, rngs=nnx.Rngs(1))
    out = _forward(model, np.zeros((1, 72, 40, 3), np.float32))
    assert out.cls_logits.shape[1] == sum(level_sizes((72, 40), config.strides))


def test_initial_class_probability_is_the_prior(tiny_model):
    out = _forward(tiny_model, np.zeros((1, 64, 64, 3), np.float32))
    np.testing.assert_allclose(jax.nn.sigmoid(out.cls_logits), 0.01, rtol=0.05)
    bias = tiny_model.head.cls_logits.bias[...]
    np.testing.assert_allclose(bias, -math.log(99.0), rtol=1e-6)


def test_decode_ltrb_known_values():
    points = jnp.array([[10.0, 20.0], [4.0, 4.0]])
    ltrb = jnp.array([[1.0, 2.0, 3.0, 4.0], [4.0, 4.0, 0.0, 0.0]])
    np.testing.assert_allclose(
        decode_ltrb(points, ltrb), [[9.0, 18.0, 13.0, 24.0], [0.0, 0.0, 4.0, 4.0]]
    )


@pytest.mark.parametrize("activation", ["relu", "exp"])
def test_head_regression_is_scaled_and_decoded(activation):
    """Zero the box conv's kernel: every anchor then predicts its bias, known ltrb."""
    config = fcos_config("tiny", num_classes=2, reg_activation=activation)
    model = FCOS(config, rngs=nnx.Rngs(2))
    bias = np.array([0.5, 1.0, 1.5, 2.0], np.float32)
    scales = (0.5, 1.0, 2.0)
    model.head.ltrb.kernel[...] = jnp.zeros_like(model.head.ltrb.kernel[...])
    model.head.ltrb.bias[...] = jnp.asarray(bias)
    for scale, param in zip(scales, model.head.scales, strict=True):
        param[...] = jnp.float32(scale)

    out = _forward(model, np.zeros((1, 64, 64, 3), np.float32))
    points, strides = anchor_points((64, 64), config.strides)
    level_scale = np.repeat(scales, level_sizes((64, 64), config.strides))[:, None]
    raw = bias[None, :] * level_scale
    if activation == "relu":
        expected_ltrb = np.maximum(raw, 0) * np.asarray(strides)[:, None]
    else:
        expected_ltrb = np.exp(raw)
    np.testing.assert_allclose(out.ltrb[0], expected_ltrb, rtol=1e-6)
    points = np.asarray(points)
    expected_boxes = np.concatenate(
        [points - expected_ltrb[:, :2], points + expected_ltrb[:, 2:]], axis=1
    )
    np.testing.assert_allclose(out.pred_boxes[0], expected_boxes, rtol=1e-6, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    images = np.random.default_rng(3).normal(size=(1, 64, 64, 3)).astype(np.float32)
    f32 = FCOS(fcos_config("tiny", num_classes=NUM_CLASSES), rngs=nnx.Rngs(4))
    bf16 = FCOS(fcos_config("tiny", num_classes=NUM_CLASSES, dtype="bfloat16"), rngs=nnx.Rngs(4))
    for leaf in jax.tree.leaves(nnx.state(bf16, nnx.Param)):
        assert leaf.dtype == jnp.float32
    out16, out32 = _forward(bf16, images), _forward(f32, images)
    for field in out16:
        assert field.dtype == jnp.float32
        assert np.all(np.isfinite(field))
    # Same parameters, lower precision: close, not equal.
    np.testing.assert_allclose(out16.cls_logits, out32.cls_logits, atol=0.05)
    np.testing.assert_allclose(out16.iou_logits, out32.iou_logits, atol=0.05)


def test_no_shared_submodules_and_tree_mode(tiny_model):
    assert nnx.find_duplicates(tiny_model) == []
    images = np.random.default_rng(5).normal(size=(1, 64, 64, 3)).astype(np.float32)
    with nnx.set_graph_mode(False):
        model = FCOS(fcos_config("tiny", num_classes=NUM_CLASSES), rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)
        tree_out = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, images)
    np.testing.assert_allclose(
        tree_out.cls_logits, _forward(tiny_model, images).cls_logits, rtol=1e-5, atol=1e-6
    )


def test_frozen_batch_norm_statistics_are_not_params():
    config = fcos_config("tiny", num_classes=2, backbone_norm="frozen_batch")
    model = FCOS(config, rngs=nnx.Rngs(6))
    stats = nnx.state(model, nnx.BatchStat)
    assert len(jax.tree.leaves(stats)) > 0
    param_paths = {path for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert not any("stem_norm" in map(str, path) for path in param_paths)
    out = _forward(model, np.zeros((1, 64, 64, 3), np.float32))
    assert np.all(np.isfinite(out.pred_boxes))


def test_resnet50_has_fcos_size_and_shapes():
    """Shapes only (abstract init): ResNet-50 FCOS has about 32M parameters."""
    config = fcos_config("resnet50", num_classes=80)
    abstract = nnx.eval_shape(lambda: FCOS(config, rngs=nnx.Rngs(0)))
    num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert 31e6 < num_params < 33e6
    assert abstract.backbone.out_channels == (512, 1024, 2048)


@pytest.mark.parametrize(
    "bad",
    [
        dict(strides=(16, 32)),
        dict(strides=()),
        dict(backbone="vgg"),
        dict(reg_activation="softplus"),
    ],
)
def test_config_validation(bad):
    with pytest.raises(ValueError):
        FCOSConfig(num_classes=2, **bad)
