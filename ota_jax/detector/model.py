"""FCOS (Tian et al. 2019) in Flax NNX: ResNet backbone, FPN, shared head with an IoU branch.

The head follows the official OTA code (an FCOS head on cvpods): two towers of
conv + GroupNorm + ReLU shared by all levels, class logits with the focal-loss
prior bias, ``ltrb`` distances scaled per level, and an IoU logit on the box
tower in place of FCOS's centerness.

Layout is channels-last (NHWC). ``FCOSConfig.dtype`` sets the compute dtype
(bfloat16 on accelerators); parameters stay float32 and the outputs are always
float32, since the assignment and the losses run in float32.

The module tree holds no shared submodules and keeps lists of modules in
``nnx.List``, so it works in both NNX graph mode and tree mode.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

from ota_jax.anchors import anchor_points, feature_sizes

__all__ = [
    "FCOS",
    "FCOSConfig",
    "FCOSOutput",
    "ResNet",
    "decode_ltrb",
    "fcos_config",
]

# Per-backbone block type, blocks per stage and stem width (He et al. 2016).
_RESNETS: dict[str, tuple[str, tuple[int, ...], int]] = {
    "tiny": ("basic", (1, 1, 1, 1), 8),  # CPU tests and toy training on small images
    "resnet18": ("basic", (2, 2, 2, 2), 64),
    "resnet34": ("basic", (3, 4, 6, 3), 64),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 64),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 64),
}


@dataclasses.dataclass(frozen=True)
class FCOSConfig:
    """Static description of an FCOS model (hashable: usable as a static jit argument).

    Attributes:
      num_classes: number of foreground classes C.
      backbone: one of ``"tiny"``, ``"resnet18"``, ``"resnet34"``, ``"resnet50"``,
        ``"resnet101"``.
      backbone_width: stem width; ``None`` takes the backbone's own (64, or 8 for tiny).
        Stage widths are ``width * 2**i`` (times 4 for bottleneck outputs).
      backbone_norm: ``"group"`` (GroupNorm, trains from scratch, batch independent)
        or ``"frozen_batch"`` (a fixed affine with running statistics as non-trainable
        variables, for ImageNet-pretrained weights as in detectron2/cvpods).
      fpn_width: channels of the FPN outputs and of the head towers (256 in FCOS).
      strides: FPN level strides, finest first: ``8 * 2**i`` for ``i < len(strides)``.
        Up to three levels come from C3-C5; more levels (P6, P7, ...) are made by
        stride-2 convs.
      extra_levels_from: ``"p5"`` (FCOS: P6 from the FPN output P5) or ``"c5"``
        (RetinaNet: P6 from the backbone's C5).
      num_convs: conv + GroupNorm + ReLU layers in each head tower (4 in FCOS).
      num_groups: GroupNorm groups (32); reduced to ``gcd(num_groups, channels)``
        for narrow layers.
      reg_activation: ``"relu"`` (FCOS ``norm_reg_targets``, the OTA default:
        ``relu(x * scale) * stride``) or ``"exp"`` (``exp(x * scale)``).
      prior_prob: initial foreground probability of the class logits (0.01).
      backbone_frozen_stages: leading backbone stages that are not trained, counted
        as detectron2's and cvpods' ``FREEZE_AT``: 0 none, 1 the stem, 2 the stem and
        the first residual stage (res2, their default with ImageNet weights), up to 5.
        Their parameters stay out of the optimizer (see `FCOS.trainable`).
      anchor_offset: where an anchor point sits in its cell, in strides (see
        `ota_jax.anchors.anchor_points`). 0.5, the cell centre, is the original FCOS
        code's ``stride // 2`` shift (also mmdet's and YOLOX's); cvpods, on which the
        official OTA code runs, uses 0.0 (the cell's top-left corner). We keep 0.5 so
        that the points cover a padded image symmetrically (the first at ``s / 2``,
        the last at ``W - s / 2``) and the assigners' centre priors are symmetric
        about them; the regressed distances are learned, so either works. Set 0.0 to
        place the points exactly as cvpods does.
      dtype: compute dtype (``"float32"`` or ``"bfloat16"``); parameters are float32.
    """

    num_classes: int
    backbone: str = "resnet50"
    backbone_width: int | None = None
    backbone_norm: Literal["group", "frozen_batch"] = "group"
    backbone_frozen_stages: int = 0
    fpn_width: int = 256
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    extra_levels_from: Literal["p5", "c5"] = "p5"
    num_convs: int = 4
    num_groups: int = 32
    reg_activation: Literal["relu", "exp"] = "relu"
    prior_prob: float = 0.01
    anchor_offset: float = 0.5
    dtype: Any = "float32"

    def __post_init__(self) -> None:
        if self.backbone not in _RESNETS:
            raise ValueError(f"unknown backbone {self.backbone!r}; one of {sorted(_RESNETS)}")
        expected = tuple(8 * 2**i for i in range(len(self.strides)))
        if not self.strides or tuple(self.strides) != expected:
            raise ValueError(f"strides must be 8, 16, 32, ... (got {self.strides})")
        if self.backbone_norm not in ("group", "frozen_batch"):
            raise ValueError(f"unknown backbone_norm {self.backbone_norm!r}")
        if self.extra_levels_from not in ("p5", "c5"):
            raise ValueError(f"unknown extra_levels_from {self.extra_levels_from!r}")
        if self.reg_activation not in ("relu", "exp"):
            raise ValueError(f"unknown reg_activation {self.reg_activation!r}")
        if not 0 <= self.backbone_frozen_stages <= 5:
            raise ValueError(
                f"backbone_frozen_stages must be in 0..5, got {self.backbone_frozen_stages}"
            )
        if self.num_classes < 1 or self.num_convs < 0:
            raise ValueError("num_classes must be >= 1 and num_convs >= 0")


def fcos_config(name: str, num_classes: int, **overrides: Any) -> FCOSConfig:
    """A named preset: ``"tiny"`` (3 levels, 32 channels, 2 convs: CPU, 64x64 images),
    ``"resnet18"`` or ``"resnet50"`` (5 levels, 256 channels, 4 convs, as FCOS/OTA).

    >>> fcos_config("tiny", num_classes=3).strides
    (8, 16, 32)
    """
    presets: dict[str, dict[str, Any]] = {
        "tiny": dict(backbone="tiny", fpn_width=32, strides=(8, 16, 32), num_convs=2, num_groups=8),
        "resnet18": dict(backbone="resnet18"),
        "resnet50": dict(backbone="resnet50"),
    }
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; one of {sorted(presets)}")
    return FCOSConfig(num_classes=num_classes, **{**presets[name], **overrides})


class FCOSOutput(NamedTuple):
    """Per-image predictions flattened over levels in `ota_jax.anchors` order, all float32.

    Attributes:
      cls_logits: ``[B, A, C]`` class logits.
      pred_boxes: ``[B, A, 4]`` decoded xyxy boxes in pixels.
      iou_logits: ``[B, A]`` logit of the predicted box's IoU with its object.
      ltrb: ``[B, A, 4]`` predicted distances (left, top, right, bottom) in pixels.
    """

    cls_logits: Array
    pred_boxes: Array
    iou_logits: Array
    ltrb: Array


def decode_ltrb(points: Array, ltrb: Array) -> Array:
    """Boxes from distances to the four sides: ``[..., 4]`` xyxy.

    Args:
      points: ``[..., 2]`` anchor centres ``(x, y)`` in pixels (broadcastable).
      ltrb: ``[..., 4]`` distances (left, top, right, bottom) in pixels.

    >>> decode_ltrb(jnp.array([10., 20.]), jnp.array([1., 2., 3., 4.]))
    Array([ 9., 18., 13., 24.], dtype=float32)
    """
    return jnp.concatenate([points - ltrb[..., :2], points + ltrb[..., 2:]], axis=-1)


def _groups(num_groups: int, channels: int) -> int:
    return math.gcd(num_groups, channels)


class FrozenBatchNorm(nnx.Module):
    """A fixed per-channel affine ``(x - mean) / sqrt(var + eps) * scale + bias``.

    Pretrained ResNets ship BatchNorm statistics that detection fine-tuning keeps
    frozen (small per-device batches make batch statistics noisy). All four arrays
    are `nnx.BatchStat`, so an optimizer over `nnx.Param` never touches them.
    """

    def __init__(self, channels: int, *, dtype: Any, epsilon: float = 1e-5):
        self.scale = nnx.BatchStat(jnp.ones((channels,), jnp.float32))
        self.bias = nnx.BatchStat(jnp.zeros((channels,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((channels,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((channels,), jnp.float32))
        self.epsilon = epsilon
        self.dtype = dtype

    def __call__(self, x: Array) -> Array:
        multiplier = self.scale[...] * jax.lax.rsqrt(self.var[...] + self.epsilon)
        shift = self.bias[...] - self.mean[...] * multiplier
        return x * multiplier.astype(self.dtype) + shift.astype(self.dtype)


@dataclasses.dataclass(frozen=True)
class _Layers:
    """Builds the backbone's convs and norms with one set of settings (construction only)."""

    norm: str
    num_groups: int
    dtype: Any
    rngs: nnx.Rngs

    def conv(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nnx.Conv:
        # No bias: every backbone conv is followed by a norm with its own shift.
        return _conv(in_ch, out_ch, kernel, stride, dtype=self.dtype, rngs=self.rngs)

    def norm_layer(self, channels: int, *, zero_init: bool = False) -> nnx.Module:
        if self.norm == "frozen_batch":
            return FrozenBatchNorm(channels, dtype=self.dtype)
        # Zero-initialising the last norm of a residual branch makes every block
        # start as the identity, which helps training from scratch (Goyal et al. 2017).
        scale_init = nnx.initializers.zeros if zero_init else nnx.initializers.ones
        groups = _groups(self.num_groups, channels)
        return nnx.GroupNorm(
            channels, num_groups=groups, dtype=self.dtype, scale_init=scale_init, rngs=self.rngs
        )


def _conv(
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int = 1,
    *,
    dtype: Any,
    rngs: nnx.Rngs,
    use_bias: bool = False,
    **kwargs: Any,
) -> nnx.Conv:
    # Symmetric padding of kernel // 2, as torch's convs: XLA's "SAME" pads an even
    # input of a strided conv by one pixel more at the end than at the start, which
    # shifts every feature by a pixel against torchvision's (pretrained) ResNets.
    # The output size is ceil(in / stride) either way.
    pad = kernel // 2
    return nnx.Conv(
        in_ch,
        out_ch,
        (kernel, kernel),
        strides=stride,
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        dtype=dtype,
        rngs=rngs,
        **kwargs,
    )


class _Projection(nnx.Module):
    """Strided 1x1 conv + norm on the shortcut when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, layers: _Layers):
        self.conv = layers.conv(in_ch, out_ch, 1, stride)
        self.norm = layers.norm_layer(out_ch)

    def __call__(self, x: Array) -> Array:
        return self.norm(self.conv(x))


def _shortcut(in_ch: int, out_ch: int, stride: int, layers: _Layers) -> _Projection | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return _Projection(in_ch, out_ch, stride, layers)


class BasicBlock(nnx.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int, layers: _Layers):
        out_ch = width * self.expansion
        self.conv1 = layers.conv(in_ch, width, 3, stride)
        self.norm1 = layers.norm_layer(width)
        self.conv2 = layers.conv(width, out_ch, 3)
        self.norm2 = layers.norm_layer(out_ch, zero_init=True)
        self.shortcut = _shortcut(in_ch, out_ch, stride, layers)

    def __call__(self, x: Array) -> Array:
        residual = x if self.shortcut is None else self.shortcut(x)
        y = nnx.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return nnx.relu(y + residual)


class BottleneckBlock(nnx.Module):
    """1x1 -> 3x3 (strided, as torchvision's ResNet v1.5) -> 1x1 with a residual (ResNet-50+)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, layers: _Layers):
        out_ch = width * self.expansion
        self.conv1 = layers.conv(in_ch, width, 1)
        self.norm1 = layers.norm_layer(width)
        self.conv2 = layers.conv(width, width, 3, stride)
        self.norm2 = layers.norm_layer(width)
        self.conv3 = layers.conv(width, out_ch, 1)
        self.norm3 = layers.norm_layer(out_ch, zero_init=True)
        self.shortcut = _shortcut(in_ch, out_ch, stride, layers)

    def __call__(self, x: Array) -> Array:
        residual = x if self.shortcut is None else self.shortcut(x)
        y = nnx.relu(self.norm1(self.conv1(x)))
        y = nnx.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return nnx.relu(y + residual)


class ResNet(nnx.Module):
    """ResNet trunk returning the outputs of stages 2.. (C3 at stride 8, C4, C5).

    Only the stages that feed the FPN are built: ``num_outputs`` of C3, C4, C5.
    """

    def __init__(
        self,
        name: str,
        *,
        width: int | None = None,
        num_outputs: int = 3,
        norm: str = "group",
        num_groups: int = 32,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        block_kind, stage_sizes, default_width = _RESNETS[name]
        block_cls = BasicBlock if block_kind == "basic" else BottleneckBlock
        layers = _Layers(norm, num_groups, dtype, rngs)
        width = width or default_width
        self.stem_conv = layers.conv(3, width, 7, 2)
        self.stem_norm = layers.norm_layer(width)
        stages, in_ch = [], width
        self.out_channels: tuple[int, ...] = ()
        for i, num_blocks in enumerate(stage_sizes[: 1 + num_outputs]):
            blocks = []
            for j in range(num_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block_cls(in_ch, width * 2**i, stride, layers))
                in_ch = width * 2**i * block_cls.expansion
            stages.append(nnx.List(blocks))
            if i > 0:
                self.out_channels = (*self.out_channels, in_ch)
        self.stages = nnx.List(stages)

    def __call__(self, x: Array) -> list[Array]:
        """``[B, H, W, 3]`` -> ``[C3, C4, C5][:num_outputs]``, each ``[B, H/s, W/s, ch]``."""
        x = nnx.relu(self.stem_norm(self.stem_conv(x)))
        # torchvision's max-pool pads by 1 on each side (with -inf), not as "SAME".
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        outputs = []
        for i, stage in enumerate(self.stages):
            for block in stage:
                x = block(x)
            if i > 0:
                outputs.append(x)
        return outputs


def _in_frozen_stage(path: tuple[Any, ...], frozen_stages: int) -> bool:
    """Whether an FCOS state path lies in the first ``frozen_stages`` backbone stages
    (detectron2's numbering: 1 is the stem, 2 the first residual stage, ...)."""
    if frozen_stages < 1 or len(path) < 2 or path[0] != "backbone":
        return False
    if path[1] in ("stem_conv", "stem_norm"):
        return True
    return path[1] == "stages" and len(path) > 2 and int(path[2]) < frozen_stages - 1


def _fpn_conv(
    in_ch: int, out_ch: int, kernel: int, stride: int, *, dtype: Any, rngs: nnx.Rngs
) -> nnx.Conv:
    # detectron2/cvpods FPN init: kaiming-uniform with a=1, zero bias.
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "uniform")
    return _conv(
        in_ch, out_ch, kernel, stride, dtype=dtype, rngs=rngs, use_bias=True, kernel_init=init
    )


class FPN(nnx.Module):
    """Feature pyramid (Lin et al. 2017): top-down over C3-C5, then strided convs for P6+."""

    def __init__(
        self,
        in_channels: Sequence[int],
        width: int,
        num_levels: int,
        *,
        extra_from: str,
        dtype: Any,
        rngs: nnx.Rngs,
    ):
        self.lateral = nnx.List(
            [_fpn_conv(c, width, 1, 1, dtype=dtype, rngs=rngs) for c in in_channels]
        )
        self.output = nnx.List(
            [_fpn_conv(width, width, 3, 1, dtype=dtype, rngs=rngs) for _ in in_channels]
        )
        num_extra = num_levels - len(in_channels)
        self.extra_from = extra_from
        first_in = width if extra_from == "p5" else in_channels[-1]
        self.extra = nnx.List(
            [
                _fpn_conv(first_in if i == 0 else width, width, 3, 2, dtype=dtype, rngs=rngs)
                for i in range(num_extra)
            ]
        )

    def __call__(self, features: Sequence[Array]) -> list[Array]:
        """``[C3, ...]`` -> ``[P3, ..., P_last]``, each ``[B, h_l, w_l, width]``."""
        laterals = [conv(f) for conv, f in zip(self.lateral, features, strict=True)]
        merged = [laterals[-1]]
        for lateral in reversed(laterals[:-1]):
            coarse = merged[0]
            # Nearest upsampling to the finer map's exact size: equals 2x repetition
            # for even sizes and handles the odd ones ceil() produces.
            up = jax.image.resize(coarse, lateral.shape[:-1] + coarse.shape[-1:], "nearest")
            merged.insert(0, lateral + up)
        outputs = [conv(x) for conv, x in zip(self.output, merged, strict=True)]
        x = outputs[-1] if self.extra_from == "p5" else features[-1]
        for i, conv in enumerate(self.extra):
            # FCOS/RetinaNet: ReLU between P6 and P7, none before P6.
            x = conv(nnx.relu(x) if i > 0 else x)
            outputs.append(x)
        return outputs


class _TowerLayer(nnx.Module):
    """conv 3x3 + GroupNorm + ReLU, one layer of a head tower."""

    def __init__(self, width: int, num_groups: int, dtype: Any, rngs: nnx.Rngs):
        self.conv = _head_conv(width, width, dtype=dtype, rngs=rngs)
        groups = _groups(num_groups, width)
        self.norm = nnx.GroupNorm(width, num_groups=groups, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return nnx.relu(self.norm(self.conv(x)))


def _head_conv(
    in_ch: int, out_ch: int, *, dtype: Any, rngs: nnx.Rngs, bias: float = 0.0
) -> nnx.Conv:
    # FCOS init: normal(std=0.01) kernels and a constant bias.
    return _conv(
        in_ch,
        out_ch,
        3,
        dtype=dtype,
        rngs=rngs,
        use_bias=True,
        kernel_init=nnx.initializers.normal(0.01),
        bias_init=nnx.initializers.constant(bias),
    )


class FCOSHead(nnx.Module):
    """The head shared by all levels: class and box towers, class/ltrb/IoU predictions."""

    def __init__(
        self,
        width: int,
        num_classes: int,
        num_levels: int,
        *,
        num_convs: int,
        num_groups: int,
        prior_prob: float,
        dtype: Any,
        rngs: nnx.Rngs,
    ):
        self.cls_tower = nnx.List(
            [_TowerLayer(width, num_groups, dtype, rngs) for _ in range(num_convs)]
        )
        self.box_tower = nnx.List(
            [_TowerLayer(width, num_groups, dtype, rngs) for _ in range(num_convs)]
        )
        # The class bias encodes the prior so that at initialisation the focal loss
        # is not swamped by the many easy negatives (Lin et al. 2017).
        prior_bias = -math.log((1 - prior_prob) / prior_prob)
        self.cls_logits = _head_conv(width, num_classes, dtype=dtype, rngs=rngs, bias=prior_bias)
        self.ltrb = _head_conv(width, 4, dtype=dtype, rngs=rngs)
        self.iou = _head_conv(width, 1, dtype=dtype, rngs=rngs)
        self.scales = nnx.List([nnx.Param(jnp.ones((), jnp.float32)) for _ in range(num_levels)])

    def __call__(self, feature: Array, level: int) -> tuple[Array, Array, Array]:
        """One level ``[B, h, w, width]`` -> float32 class logits ``[B, h, w, C]``, raw
        scaled regression ``[B, h, w, 4]`` (before the activation) and IoU logits ``[B, h, w]``.
        """
        cls_features = box_features = feature
        for layer in self.cls_tower:
            cls_features = layer(cls_features)
        for layer in self.box_tower:
            box_features = layer(box_features)
        cls_logits = self.cls_logits(cls_features).astype(jnp.float32)
        regression = self.ltrb(box_features).astype(jnp.float32) * self.scales[level][...]
        iou_logits = self.iou(box_features).astype(jnp.float32)[..., 0]
        return cls_logits, regression, iou_logits


class FCOS(nnx.Module):
    """FCOS detector. ``model(images [B, H, W, 3]) -> FCOSOutput``.

    Images are expected already normalised (the input pipeline's job). Level
    sizes are ``ceil(H / stride)``, matching `ota_jax.anchors.anchor_points`.
    """

    def __init__(self, config: FCOSConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype = jnp.dtype(config.dtype)
        num_levels = len(config.strides)
        self.backbone = ResNet(
            config.backbone,
            width=config.backbone_width,
            num_outputs=min(num_levels, 3),
            norm=config.backbone_norm,
            num_groups=config.num_groups,
            dtype=dtype,
            rngs=rngs,
        )
        self.fpn = FPN(
            self.backbone.out_channels,
            config.fpn_width,
            num_levels,
            extra_from=config.extra_levels_from,
            dtype=dtype,
            rngs=rngs,
        )
        self.head = FCOSHead(
            config.fpn_width,
            config.num_classes,
            num_levels,
            num_convs=config.num_convs,
            num_groups=config.num_groups,
            prior_prob=config.prior_prob,
            dtype=dtype,
            rngs=rngs,
        )

    def trainable(self) -> nnx.filterlib.Filter:
        """The NNX filter of the parameters to train: every `nnx.Param` but those of
        the ``config.backbone_frozen_stages`` first backbone stages.

        `ota_jax.detector.create_train_state` splits the model with it, so frozen
        parameters get no gradient, no optimizer state and no weight decay.
        """
        frozen_stages = self.config.backbone_frozen_stages

        def frozen(path: tuple[Any, ...], _: Any) -> bool:
            return _in_frozen_stage(path, frozen_stages)

        return nnx.All(nnx.Param, nnx.Not(frozen))

    def anchors(self, image_size: tuple[int, int]) -> tuple[Array, Array]:
        """``points [A, 2]`` and ``strides [A]`` of this model for ``(H, W)`` inputs."""
        return anchor_points(image_size, self.config.strides, offset=self.config.anchor_offset)

    def __call__(self, images: Array) -> FCOSOutput:
        """``images [B, H, W, 3]`` -> `FCOSOutput` with ``A = sum_l ceil(H/s_l) * ceil(W/s_l)``."""
        config = self.config
        image_size = tuple(images.shape[1:3])
        features = self.fpn(self.backbone(images.astype(jnp.dtype(config.dtype))))
        expected = feature_sizes(image_size, config.strides)
        got = tuple(tuple(f.shape[1:3]) for f in features)
        if got != expected:  # trace-time check: anchors and features must line up
            raise ValueError(f"feature sizes {got} do not match anchor grid {expected}")

        cls_all, ltrb_all, iou_all = [], [], []
        for level, (feature, stride) in enumerate(zip(features, config.strides, strict=True)):
            cls_logits, regression, iou_logits = self.head(feature, level)
            if config.reg_activation == "relu":
                ltrb = nnx.relu(regression) * stride
            else:
                # Clamp before exp so an early blow-up gives a huge finite box, not inf.
                ltrb = jnp.exp(jnp.minimum(regression, 20.0))
            batch = feature.shape[0]
            cls_all.append(cls_logits.reshape(batch, -1, config.num_classes))
            ltrb_all.append(ltrb.reshape(batch, -1, 4))
            iou_all.append(iou_logits.reshape(batch, -1))

        ltrb = jnp.concatenate(ltrb_all, axis=1)
        points, _ = self.anchors(image_size)
        return FCOSOutput(
            cls_logits=jnp.concatenate(cls_all, axis=1),
            pred_boxes=decode_ltrb(points, ltrb),
            iou_logits=jnp.concatenate(iou_all, axis=1),
            ltrb=ltrb,
        )
