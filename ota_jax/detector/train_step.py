"""Training and evaluation steps of the FCOS detector, single device or data parallel.

The model lives as an NNX graphdef plus states inside `TrainState`, a plain
pytree, so the steps are ordinary ``jax.jit`` functions: the same code runs on
one device and, with the batch sharded along a ``"data"`` mesh axis and the
state replicated, on many devices or hosts (XLA inserts the gradient
all-reduce). No pmap, no hand-written collectives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from jax import Array
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from ota_jax.detector.losses import LossConfig, detection_loss
from ota_jax.detector.model import FCOS
from ota_jax.detector.postprocess import Detections, PostprocessConfig, postprocess

__all__ = [
    "DATA_AXIS",
    "OptimizerConfig",
    "TrainState",
    "create_train_state",
    "eval_step",
    "make_data_mesh",
    "make_optimizer",
    "make_schedule",
    "replicate",
    "shard_batch",
    "train_step",
    "weight_decay_mask",
]

DATA_AXIS = "data"
_DEFAULT_LOSS = LossConfig()
_DEFAULT_POSTPROCESS = PostprocessConfig()


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer and learning-rate schedule (defaults: the OTA/FCOS 1x COCO recipe).

    Attributes:
      name: ``"sgd"`` (momentum SGD with L2 weight decay, as detectron2/cvpods)
        or ``"adamw"`` (decoupled weight decay).
      learning_rate: peak learning rate (0.01 at batch 16).
      momentum: SGD momentum; AdamW's ``b1``.
      weight_decay: L2 (SGD) or decoupled (AdamW) weight decay. It applies to the
        conv kernels always and never to the parameters of norm layers (cvpods'
        ``WEIGHT_DECAY_NORM = 0``); see ``decay_biases_and_scales`` for the rest.
      decay_biases_and_scales: also decay the conv biases and the head's per-level
        scales, as cvpods' ``D2SGD`` optimizer of the official OTA code does (its
        ``WEIGHT_DECAY`` covers every parameter outside a norm layer, with
        ``BIAS_LR_FACTOR = 1``). False (the default) decays kernels only.
      total_steps: length of training (the cosine schedule's horizon).
      warmup_steps: linear warm-up length.
      warmup_factor: warm-up starts at ``learning_rate * warmup_factor``.
      schedule: ``"step"`` (multiply by ``decay_factor`` at each of ``decay_steps``)
        or ``"cosine"`` (down to 0 at ``total_steps``).
      decay_steps: step-schedule boundaries, absolute steps.
      decay_factor: step-schedule multiplier.
      clip_norm: clip gradients to this global norm; ``None`` (the official
        recipe) for no clipping.
    """

    name: Literal["sgd", "adamw"] = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    total_steps: int = 90_000
    warmup_steps: int = 1000
    warmup_factor: float = 0.001
    schedule: Literal["step", "cosine"] = "step"
    decay_steps: tuple[int, ...] = (60_000, 80_000)
    decay_factor: float = 0.1
    clip_norm: float | None = None
    decay_biases_and_scales: bool = False


def make_schedule(config: OptimizerConfig) -> optax.Schedule:
    """Linear warm-up followed by the step or cosine schedule: ``step -> learning rate``."""
    peak = config.learning_rate
    start = peak * config.warmup_factor
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            start, peak, config.warmup_steps, max(config.total_steps, config.warmup_steps + 1)
        )
    if config.schedule != "step":
        raise ValueError(f"unknown schedule {config.schedule!r}")
    # join_schedules restarts the count at each boundary, hence the shift.
    decays = optax.piecewise_constant_schedule(
        peak, {max(b - config.warmup_steps, 0): config.decay_factor for b in config.decay_steps}
    )
    if config.warmup_steps == 0:
        return decays
    warmup = optax.linear_schedule(start, peak, config.warmup_steps)
    return optax.join_schedules([warmup, decays], [config.warmup_steps])


def _in_norm_layer(path: tuple[Any, ...]) -> bool:
    """Whether a parameter's path ends in a norm layer's own parameter: the model
    names every norm module ``*norm*`` (``stem_norm``, ``norm1``, ``norm``)."""
    names = [getattr(key, "key", None) for key in path]
    names = [name for name in names if name is not None]  # DictKeys: module and field names
    return len(names) >= 2 and isinstance(names[-2], str) and "norm" in names[-2]


def weight_decay_mask(params: Any, *, decay_biases_and_scales: bool = False) -> Any:
    """The pytree of bools of `params` saying which parameters get weight decay.

    Kernels (``ndim > 1``) do, the parameters of norm layers never do, and the
    other vectors and scalars (conv biases, per-level scales) do only with
    ``decay_biases_and_scales`` (cvpods' ``D2SGD``).
    """

    def decayed(path: tuple[Any, ...], p: Array) -> bool:
        if _in_norm_layer(path):
            return False
        return p.ndim > 1 or decay_biases_and_scales

    return jax.tree_util.tree_map_with_path(decayed, params)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """The optax transformation for `config` (clip -> decay -> SGD, or clip -> AdamW)."""
    schedule = make_schedule(config)
    mask = partial(weight_decay_mask, decay_biases_and_scales=config.decay_biases_and_scales)
    parts = []
    if config.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(config.clip_norm))
    if config.name == "sgd":
        # L2 decay added to the gradient before momentum, as torch.optim.SGD does.
        parts.append(optax.add_decayed_weights(config.weight_decay, mask=mask))
        parts.append(optax.sgd(schedule, momentum=config.momentum))
    elif config.name == "adamw":
        parts.append(
            optax.adamw(schedule, b1=config.momentum, weight_decay=config.weight_decay, mask=mask)
        )
    else:
        raise ValueError(f"unknown optimizer {config.name!r}")
    return optax.chain(*parts)


@struct.dataclass
class TrainState:
    """Everything a train step reads and writes; a pytree with static model structure.

    Attributes:
      step: ``[]`` int32 optimizer steps taken.
      params: trainable `nnx.Param` state of the model (``FCOS.trainable``).
      rest: other model state (frozen BatchNorm statistics, frozen backbone
        stages), not trained.
      opt_state: the optimizer state.
      graphdef: the model structure (static).
      tx: the optax transformation (static).
      loss_config: the loss and assigner settings (static).
      schedule: optional ``step -> learning rate``, only for logging (static).
    """

    step: Array
    params: nnx.State
    rest: nnx.State
    opt_state: optax.OptState
    graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    loss_config: LossConfig = struct.field(pytree_node=False)
    schedule: Callable[[Array], Array] | None = struct.field(pytree_node=False, default=None)

    def model(self, params: nnx.State | None = None) -> FCOS:
        """The model with this state's (or the given) parameters."""
        return nnx.merge(self.graphdef, self.params if params is None else params, self.rest)


def create_train_state(
    model: FCOS,
    tx: optax.GradientTransformation,
    *,
    loss_config: LossConfig = _DEFAULT_LOSS,
    schedule: Callable[[Array], Array] | None = None,
) -> TrainState:
    """Split `model` into a `TrainState` and initialise the optimizer.

    ``params`` holds the parameters `FCOS.trainable` selects; frozen backbone stages
    (``FCOSConfig.backbone_frozen_stages``) go to ``rest`` with the other state, so
    they get no gradient and no update.
    """
    graphdef, params, rest = nnx.split(model, model.trainable(), ...)
    # train_step donates the state: copy so the caller's model keeps valid buffers.
    params, rest = jax.tree.map(jnp.copy, (params, rest))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        rest=rest,
        opt_state=tx.init(params),
        graphdef=graphdef,
        tx=tx,
        loss_config=loss_config,
        schedule=schedule,
    )


def _loss_fn(
    params: nnx.State, state: TrainState, batch: Mapping[str, Array]
) -> tuple[Array, dict[str, Array]]:
    model = state.model(params)
    images = batch["image"]
    outputs = model(images)
    points, strides = model.anchors(tuple(images.shape[1:3]))
    return detection_loss(outputs, points, strides, batch, config=state.loss_config)


@partial(jax.jit, donate_argnums=0)
def train_step(state: TrainState, batch: Mapping[str, Array]) -> tuple[TrainState, dict]:
    """One optimizer step on a (possibly sharded) global batch.

    Args:
      state: a `TrainState` (replicated when data parallel); donated.
      batch: ``image [B, H, W, 3]`` float32, ``gt_boxes [B, M, 4]`` xyxy pixels,
        ``gt_labels [B, M]`` int32, ``gt_mask [B, M]`` bool.

    Returns:
      The new state and scalar metrics: ``loss``, its parts (see
      `ota_jax.detector.losses.detection_loss`), ``grad_norm`` and, when the
      state has a schedule, ``learning_rate``.
    """
    grad_fn = jax.value_and_grad(_loss_fn, has_aux=True)
    (loss, parts), grads = grad_fn(state.params, state, batch)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, **parts, "grad_norm": optax.tree.norm(grads)}
    if state.schedule is not None:
        metrics["learning_rate"] = jnp.asarray(state.schedule(state.step), jnp.float32)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


@partial(jax.jit, static_argnames=("config",))
def eval_step(
    state: TrainState, images: Array, config: PostprocessConfig = _DEFAULT_POSTPROCESS
) -> Detections:
    """Detections ``[B, K]`` for ``images [B, H, W, 3]``, boxes clipped to the input size."""
    outputs = state.model()(images)
    return postprocess(outputs, config=config, image_size=tuple(images.shape[1:3]))


def make_data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh with Auto sharding over ``num_devices`` (default all, across all hosts)
    named ``"data"``."""
    devices = jax.devices()
    num = len(devices) if num_devices is None else num_devices
    # Auto axes (GSPMD propagation): the batch sharding flows through the model and
    # the assigners' vmap without annotations. JAX's default, Explicit axes, would
    # put shardings in every intermediate's type and require a mesh context.
    return jax.make_mesh((num,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices[:num])


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every array of `tree` (e.g. a `TrainState`) on all devices of `mesh`."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, Array]:
    """Global arrays sharded along ``"data"`` from this host's slice of the batch.

    Each host passes its own ``[B_local, ...]`` arrays (consecutive slices of the
    global batch in process order); the global batch axis is ``B_local *
    num_processes`` and must divide evenly over the mesh's devices.
    """
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return {
        name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for name, value in local_batch.items()
    }
