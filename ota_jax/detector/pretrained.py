"""ImageNet-pretrained torchvision ResNet weights for the NNX `ResNet` backbone.

The paper's COCO numbers start from an ImageNet-pretrained ResNet. This module
copies a torchvision ResNet-18/34/50/101 ``state_dict`` into the backbone of an
`FCOS` built with ``backbone_norm="frozen_batch"``: convs (``OIHW`` to ``HWIO``)
and BatchNorm affines and running statistics. With the ImageNet input
normalisation of `ota_jax.data.pipeline` (RGB / 255, torchvision's mean and
std) the backbone's C3-C5 equal torchvision's. Nothing is downloaded: save the
file once on a machine with internet (see "Pretrained backbone" in
docs/training.md), then pass its path.

Files: ``.pth``/``.pt`` need PyTorch; ``.safetensors`` need the ``safetensors``
package (no PyTorch); ``.npz`` need only NumPy. All three hold torchvision's
parameter names (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ota_jax.detector.model import BottleneckBlock, FrozenBatchNorm, ResNet

__all__ = ["load_torchvision_resnet", "read_state_dict"]

# Entries of a torchvision state dict that the detector's backbone does not use.
_UNUSED = re.compile(r"^fc\.|\.num_batches_tracked$")


def read_state_dict(source: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The arrays of a saved state dict by name: ``.pth``/``.pt`` (through PyTorch),
    ``.safetensors`` (through the ``safetensors`` package) or ``.npz``.

    Returns:
      ``{name: float32 or int64 ndarray}`` (torchvision's ``OIHW`` conv layout).
    """
    path = os.fspath(source)
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".pth", ".pt"):
        try:
            import torch
        except ImportError as error:
            raise ImportError(
                f"{path}: reading a .pth needs PyTorch; or convert it once to .safetensors "
                "or .npz (see docs/training.md), which need no PyTorch"
            ) from error
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
            loaded = loaded["state_dict"]
        return {name: _to_numpy(tensor) for name, tensor in loaded.items()}
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError as error:
            raise ImportError(
                f"{path}: reading .safetensors needs `pip install safetensors` "
                "(in the ota-jax[train] extra)"
            ) from error
        return dict(load_file(path))
    if suffix == ".npz":
        with np.load(path) as archive:
            return {name: archive[name] for name in archive.files}
    raise ValueError(f"{path}: unknown weights format {suffix!r}; use .pth, .safetensors or .npz")


def _modules(resnet: ResNet) -> Iterator[tuple[str, nnx.Module]]:
    """``(torchvision name prefix, our conv or norm)`` for every layer of ``resnet``."""
    yield "conv1", resnet.stem_conv
    yield "bn1", resnet.stem_norm
    for i, stage in enumerate(resnet.stages):
        for j, block in enumerate(stage):
            prefix = f"layer{i + 1}.{j}"
            for k in range(1, 4 if isinstance(block, BottleneckBlock) else 3):
                yield f"{prefix}.conv{k}", getattr(block, f"conv{k}")
                yield f"{prefix}.bn{k}", getattr(block, f"norm{k}")
            if block.shortcut is not None:
                yield f"{prefix}.downsample.0", block.shortcut.conv
                yield f"{prefix}.downsample.1", block.shortcut.norm


def _set(variable: nnx.Variable, value: np.ndarray, name: str) -> None:
    if tuple(value.shape) != tuple(variable.shape):
        raise ValueError(
            f"{name}: shape {tuple(value.shape)} (as ours) does not fit the backbone's "
            f"{tuple(variable.shape)}; is it the same ResNet depth and width?"
        )
    variable.set_value(jnp.asarray(value, jnp.float32))


def load_torchvision_resnet(
    resnet: ResNet, source: str | os.PathLike[str] | Mapping[str, Any]
) -> ResNet:
    """Copy a torchvision ResNet ``state_dict`` into ``resnet``, in place.

    Every conv and norm of ``resnet`` must find its weights; the classifier
    (``fc.*``), ``num_batches_tracked`` and the stages the detector does not
    build (e.g. ``layer4`` without C5) are skipped; any other name is an error.

    Args:
      resnet: an `ota_jax.detector.model.ResNet` (``FCOS(...).backbone``) built with
        ``norm="frozen_batch"`` (``FCOSConfig.backbone_norm``), of the same depth
        (``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"``) and the
        default width.
      source: a ``.pth``/``.pt``, ``.safetensors`` or ``.npz`` file (see
        `read_state_dict`), or a mapping from torchvision names to arrays
        (NumPy, or PyTorch tensors on the CPU).

    Returns:
      ``resnet``, now holding the pretrained weights (float32).

    Raises:
      ValueError: ``resnet`` has trainable norms, a weight is missing, unknown or
        of the wrong shape.
    """
    if not isinstance(resnet.stem_norm, FrozenBatchNorm):
        raise ValueError(
            "pretrained torchvision weights need the backbone built with "
            "backbone_norm='frozen_batch' (their BatchNorm statistics stay fixed)"
        )
    if isinstance(source, Mapping):
        weights = {name: _to_numpy(value) for name, value in source.items()}
    else:
        weights = read_state_dict(source)
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in weights:
            raise ValueError(f"the state dict has no {name!r}; is it a torchvision ResNet?")
        used.add(name)
        return np.asarray(weights[name], np.float32)

    for prefix, module in _modules(resnet):
        if isinstance(module, nnx.Conv):
            kernel = take(f"{prefix}.weight").transpose(2, 3, 1, 0)  # OIHW -> HWIO
            _set(module.kernel, kernel, f"{prefix}.weight")
        else:
            for ours, theirs in (
                ("scale", "weight"),
                ("bias", "bias"),
                ("mean", "running_mean"),
                ("var", "running_var"),
            ):
                name = f"{prefix}.{theirs}"
                _set(getattr(module, ours), take(name), name)

    built_stages = len(resnet.stages)
    unbuilt = re.compile(rf"^layer([{built_stages + 1}-9])\.") if built_stages < 4 else None
    unknown = sorted(
        name
        for name in set(weights) - used
        if not _UNUSED.search(name) and not (unbuilt and unbuilt.match(name))
    )
    if unknown:
        raise ValueError(
            f"{len(unknown)} weights fit no layer of the backbone, e.g. {unknown[:5]}; "
            "is it a torchvision ResNet of the same depth?"
        )
    return resnet


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)
