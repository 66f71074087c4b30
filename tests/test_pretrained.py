"""torchvision ResNet weights in the NNX backbone: C3-C5 equal a torch reference forward.

The reference is torchvision's ResNet forward written out with ``torch.nn.functional``
(symmetric padding of the 7x7/2 stem and the 3x3/2 max-pool, stride on the
Bottleneck's 3x3 as ResNet v1.5), run on random weights and random BatchNorm
statistics under torchvision's parameter names; torchvision itself is not needed.
"""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest
from flax import nnx

from ota_jax.detector import load_torchvision_resnet
from ota_jax.detector.model import FCOS, ResNet, fcos_config
from ota_jax.detector.pretrained import read_state_dict

# torchvision's block type and blocks per stage.
_ARCH = {
    "resnet18": (False, (2, 2, 2, 2)),
    "resnet34": (False, (3, 4, 6, 3)),
    "resnet50": (True, (3, 4, 6, 3)),
    "resnet101": (True, (3, 4, 23, 3)),
}


def random_state_dict(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A torchvision-named ResNet state dict with random weights and BN statistics."""
    bottleneck, stage_sizes = _ARCH[name]
    rng = np.random.default_rng(seed)
    sd: dict[str, np.ndarray] = {}

    def conv(key: str, out_ch: int, in_ch: int, k: int) -> None:
        std = np.sqrt(2.0 / (in_ch * k * k))
        sd[f"{key}.weight"] = rng.normal(0, std, (out_ch, in_ch, k, k)).astype(np.float32)

    def bn(key: str, ch: int) -> None:
        sd[f"{key}.weight"] = rng.uniform(0.5, 1.5, ch).astype(np.float32)
        sd[f"{key}.bias"] = rng.normal(0, 0.2, ch).astype(np.float32)
        sd[f"{key}.running_mean"] = rng.normal(0, 0.2, ch).astype(np.float32)
        sd[f"{key}.running_var"] = rng.uniform(0.5, 2.0, ch).astype(np.float32)
        sd[f"{key}.num_batches_tracked"] = np.array(100, np.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    in_ch, expansion = 64, 4 if bottleneck else 1
    for i, blocks in enumerate(stage_sizes):
        width = 64 * 2**i
        for j in range(blocks):
            p = f"layer{i + 1}.{j}"
            stride = 2 if i > 0 and j == 0 else 1
            if bottleneck:
                conv(f"{p}.conv1", width, in_ch, 1)
                conv(f"{p}.conv2", width, width, 3)
                conv(f"{p}.conv3", width * 4, width, 1)
                for k, ch in ((1, width), (2, width), (3, width * 4)):
                    bn(f"{p}.bn{k}", ch)
            else:
                conv(f"{p}.conv1", width, in_ch, 3)
                conv(f"{p}.conv2", width, width, 3)
                bn(f"{p}.bn1", width)
                bn(f"{p}.bn2", width)
            if stride != 1 or in_ch != width * expansion:
                conv(f"{p}.downsample.0", width * expansion, in_ch, 1)
                bn(f"{p}.downsample.1", width * expansion)
            in_ch = width * expansion
    sd["fc.weight"] = rng.normal(0, 0.01, (1000, in_ch)).astype(np.float32)
    sd["fc.bias"] = np.zeros(1000, np.float32)
    return sd


def torch_reference(sd: dict[str, np.ndarray], name: str, images: np.ndarray) -> list:
    """C3, C4, C5 (NHWC numpy) of torchvision's ResNet forward, in torch.nn.functional."""
    import torch
    import torch.nn.functional as F

    w = {key: torch.from_numpy(value) for key, value in sd.items()}
    bottleneck, stage_sizes = _ARCH[name]

    def bn(x, key):
        return F.batch_norm(
            x,
            w[f"{key}.running_mean"],
            w[f"{key}.running_var"],
            w[f"{key}.weight"],
            w[f"{key}.bias"],
            training=False,
            eps=1e-5,
        )

    def conv(x, key, stride=1, padding=0):
        return F.conv2d(x, w[f"{key}.weight"], stride=stride, padding=padding)

    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        x = F.relu(bn(conv(x, "conv1", 2, 3), "bn1"))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        outputs = []
        for i, blocks in enumerate(stage_sizes):
            for j in range(blocks):
                p = f"layer{i + 1}.{j}"
                stride = 2 if i > 0 and j == 0 else 1
                identity = x
                if f"{p}.downsample.0.weight" in w:
                    identity = bn(conv(x, f"{p}.downsample.0", stride), f"{p}.downsample.1")
                if bottleneck:
                    y = F.relu(bn(conv(x, f"{p}.conv1"), f"{p}.bn1"))
                    y = F.relu(bn(conv(y, f"{p}.conv2", stride, 1), f"{p}.bn2"))
                    y = bn(conv(y, f"{p}.conv3"), f"{p}.bn3")
                else:
                    y = F.relu(bn(conv(x, f"{p}.conv1", stride, 1), f"{p}.bn1"))
                    y = bn(conv(y, f"{p}.conv2", 1, 1), f"{p}.bn2")
                x = F.relu(y + identity)
            if i > 0:
                outputs.append(x.permute(0, 2, 3, 1).numpy())
    return outputs


def _features(resnet: ResNet, images: np.ndarray) -> list[np.ndarray]:
    graphdef, state = nnx.split(resnet)
    out = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, images)
    return [np.asarray(f) for f in out]


def _flat(module) -> dict:
    return {path: np.asarray(v) for path, v in nnx.to_flat_state(nnx.state(module))}


@pytest.mark.torch
@pytest.mark.parametrize(
    ("name", "size", "via_file"),
    [
        ("resnet18", (64, 48), False),
        pytest.param("resnet50", (70, 57), True, marks=pytest.mark.slow),
    ],
)
def test_features_equal_torchvision_forward(name, size, via_file, tmp_path):
    """Even and odd input sizes: the stem and pool paddings are torchvision's."""
    import torch  # the torch marker skips this test without it

    sd = random_state_dict(name, seed=1)
    images = np.random.default_rng(2).normal(size=(2, *size, 3)).astype(np.float32)
    source = {key: torch.from_numpy(value) for key, value in sd.items()}
    if via_file:
        source = tmp_path / "weights.pth"
        torch.save({key: torch.from_numpy(value) for key, value in sd.items()}, source)
    resnet = ResNet(name, norm="frozen_batch", rngs=nnx.Rngs(0))
    assert load_torchvision_resnet(resnet, source) is resnet
    got = _features(resnet, images)
    want = torch_reference(sd, name, images)
    for level, (g, r) in enumerate(zip(got, want, strict=True)):
        assert g.shape == r.shape, level
        scale = np.abs(r).max()
        assert scale > 0.1, level
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-4 * scale, err_msg=f"C{level + 3}")


def abstract_resnet(name: str, **kwargs) -> ResNet:
    """A ResNet of shapes only (no initialisation): loading fills every weight, and every
    error is raised before a weight is copied."""
    return nnx.eval_shape(lambda: ResNet(name, rngs=nnx.Rngs(0), **kwargs))


def test_npz_and_safetensors_load_like_a_mapping(tmp_path):
    """No torch needed: the same weights from .npz, .safetensors and a dict."""
    sd = random_state_dict("resnet18", seed=3)
    reference = load_torchvision_resnet(abstract_resnet("resnet18", norm="frozen_batch"), sd)
    want = _flat(reference)
    np.savez(tmp_path / "w.npz", **sd)
    from safetensors.numpy import save_file  # in the train extra

    save_file(sd, str(tmp_path / "w.safetensors"))
    sources = [tmp_path / "w.npz", tmp_path / "w.safetensors"]
    for source in sources:
        resnet = abstract_resnet("resnet18", norm="frozen_batch")
        got = _flat(load_torchvision_resnet(resnet, source))
        assert got.keys() == want.keys()
        for path in want:
            np.testing.assert_array_equal(got[path], want[path], err_msg=str((source, path)))
    kernel = want[("stem_conv", "kernel")]
    np.testing.assert_array_equal(kernel, sd["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(want[("stem_norm", "var")], sd["bn1.running_var"])


def test_fcos_backbone_without_c5_skips_layer4():
    """A 2-level FCOS builds no layer4; its weights are skipped, not an error."""
    config = fcos_config("resnet18", num_classes=2, strides=(8, 16), backbone_norm="frozen_batch")
    model = nnx.eval_shape(lambda: FCOS(config, rngs=nnx.Rngs(0)))  # shapes only
    sd = random_state_dict("resnet18")
    load_torchvision_resnet(model.backbone, sd)
    got = np.asarray(model.backbone.stages[2][1].conv2.kernel[...])
    np.testing.assert_array_equal(got, sd["layer3.1.conv2.weight"].transpose(2, 3, 1, 0))


def test_wrong_weights_or_model_are_clear_errors(tmp_path):
    sd = random_state_dict("resnet18")
    with pytest.raises(ValueError, match="frozen_batch"):
        load_torchvision_resnet(abstract_resnet("resnet18"), sd)
    resnet = abstract_resnet("resnet18", norm="frozen_batch")
    with pytest.raises(ValueError, match=re.escape("layer2.0.bn1.running_var")):
        load_torchvision_resnet(
            resnet, {k: v for k, v in sd.items() if k != "layer2.0.bn1.running_var"}
        )
    with pytest.raises(ValueError, match=re.escape("extra.weight")):
        load_torchvision_resnet(resnet, {**sd, "extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="shape"):
        load_torchvision_resnet(abstract_resnet("resnet50", norm="frozen_batch"), sd)
    with pytest.raises(ValueError, match="format"):
        read_state_dict(tmp_path / "weights.h5")
