"""The training loop of ``ota-train``: train, checkpoint, resume, evaluate, draw.

One function, `train_and_evaluate`. The train state is replicated over a
``"data"`` mesh of every device (of every host) and each batch is sharded over
it, so the same code runs on one CPU and on a pod. Metrics are fetched from
the device only every ``log_every`` steps (and at checkpoints), which keeps the
host ahead of the accelerator; every step's loss is still checked then, so a
non-finite loss is reported with its exact step, before any later state can be
saved.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from ota_jax.data import registry
from ota_jax.detector import (
    FCOS,
    FCOSConfig,
    LossConfig,
    OptimizerConfig,
    TrainState,
    create_train_state,
    load_torchvision_resnet,
    make_data_mesh,
    make_optimizer,
    make_schedule,
    replicate,
    shard_batch,
    train_step,
)
from ota_jax.evaluation import CocoEvaluator, write_metrics
from ota_train import builders, input_data, interrupts
from ota_train.checkpoints import Checkpoints, all_finite
from ota_train.evaluate import evaluate
from ota_train.metrics_writer import MetricsWriter
from ota_train.visualize import draw_detections

__all__ = ["NonFiniteLossError", "create_state", "params_fingerprint", "train_and_evaluate"]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
# What ``jax_disable_most_optimizations`` sets, for one compile only.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or inf loss (or gradient, or parameters) at ``step``.

    Attributes:
      step: the first step (1-based, as logged) with a non-finite value.
      last_checkpoint: the newest checkpoint's step, all finite; None if there is none.
    """

    def __init__(
        self,
        step: int,
        value: float | str,
        last_checkpoint: int | None,
        directory: str,
        *,
        what: str = "loss",
    ):
        self.step = step
        self.last_checkpoint = last_checkpoint
        where = (
            f"the last good checkpoint is step {last_checkpoint} in {directory}"
            if last_checkpoint is not None
            else "no checkpoint was saved before it"
        )
        super().__init__(
            f"Non-finite {what} ({value}) at step {step}; training stopped and {where}. "
            "Lower the learning rate, add gradient clipping (optimizer.clip_norm) or "
            "lengthen the warm-up."
        )


@functools.cache
def _optimizer(config: OptimizerConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """One optimizer and schedule per config: the train state carries them as static
    fields, so reusing the same objects lets a later run in this process (a resume,
    a test) reuse the compiled train step instead of compiling it again."""
    return make_optimizer(config), make_schedule(config)


@functools.cache
def _initializer(
    model_config: FCOSConfig,
    optimizer: OptimizerConfig,
    loss_config: LossConfig,
    seed: int,
    mesh: Mesh,
) -> Callable[[], TrainState]:
    """The compiled function making a fresh, replicated train state (cached per setting)."""
    tx, schedule = _optimizer(optimizer)

    def init() -> TrainState:
        model = FCOS(model_config, rngs=nnx.Rngs(seed))
        return create_train_state(model, tx, loss_config=loss_config, schedule=schedule)

    # One compiled initialisation instead of an eager op (and a compile) per parameter,
    # written straight into its replicated placement. It runs once, so XLA's expensive
    # optimisations are not worth it: on CPU they take the compile from ~2 s to ~15 s.
    init = jax.jit(init, out_shardings=NamedSharding(mesh, PartitionSpec()))
    return init.lower().compile(compiler_options=_FAST_COMPILE)


def create_state(config: ml_collections.ConfigDict, mesh: Mesh) -> TrainState:
    """A freshly initialised train state of ``config``, replicated over ``mesh``.

    With ``config.model.pretrained`` the backbone holds those torchvision weights;
    without, a ResNet backbone starts from random weights and the log says so.
    """
    spec, _ = registry.resolve(config.dataset.name)
    model_config = builders.model_config(config, spec.num_classes)
    init = _initializer(
        model_config,
        builders.optimizer_config(config),
        builders.loss_config(config),
        config.seed,
        mesh,
    )
    state = init()
    path = builders.pretrained_path(config)
    if path:
        state = _with_pretrained_backbone(state, path, mesh)
        logger.info(
            "Backbone %s from the torchvision weights in %s (frozen BatchNorm, %d frozen stages)",
            model_config.backbone,
            path,
            model_config.backbone_frozen_stages,
        )
    elif model_config.backbone != "tiny":
        logger.warning(
            "The %s backbone starts from random weights (config.model.pretrained is not "
            "set); the paper's recipe starts from ImageNet weights: see "
            "'Pretrained backbone' in docs/training.md.",
            model_config.backbone,
        )
    return state


def _with_pretrained_backbone(state: TrainState, path: str, mesh: Mesh) -> TrainState:
    """``state`` with the torchvision ResNet weights of ``path`` in its backbone."""
    model = state.model()
    load_torchvision_resnet(model.backbone, path)
    _, params, rest = nnx.split(model, model.trainable(), ...)
    # The optimizer state (zeros at step 0) does not depend on the parameter values.
    params, rest = replicate((params, rest), mesh)
    return state.replace(params=params, rest=rest)


def _check_config(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
    """Clear errors for settings the loop cannot run with (`builders.validate`, and
    batches that the devices divide)."""
    builders.validate(config)
    for name, size in (("train", config.train.batch_size), ("eval", config.eval.batch_size)):
        if size % mesh.size:
            raise builders.ConfigError(
                f"config.{name}.batch_size={size} must be divisible by the {mesh.size} devices"
            )


class _Window:
    """Host-side sums of the step metrics since the last record."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.steps += 1

    def record(self) -> dict[str, float]:
        """Means over the window plus its speed; starts a new window."""
        elapsed = time.perf_counter() - self.start
        record = {f"train/{name}": total / self.steps for name, total in self.sums.items()}
        record["train/steps_per_sec"] = self.steps / max(elapsed, 1e-9)
        self.__init__()
        return record


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains ``config`` in ``workdir`` (resuming from its newest checkpoint), then evaluates.

    Writes ``metrics.jsonl``, TensorBoard files under ``tensorboard/``,
    checkpoints under ``checkpoints/``, ``config.json``, and at the end
    ``eval.json`` and ``detections.png``.

    Args:
      config: a training config (see ``ota_train/configs/_base.py``).
      workdir: the run's directory; a rerun with the same one resumes.

    Returns:
      The final COCO metrics (AP, AP50, AP75, APs, APm, APl).

    Raises:
      NonFiniteLossError: a step's loss was NaN or inf (the newest checkpoint
        is the last good state).
    """
    workdir = os.path.abspath(workdir)
    is_chief = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    mesh = make_data_mesh()
    _check_config(config, mesh)
    spec, _ = registry.resolve(config.dataset.name)
    input_data.prepare_dataset(config)  # Once, by process 0, before any process reads it.
    # First, so that missing data stops the run before the model is built.
    evaluator = CocoEvaluator.from_dataset(
        config.dataset.name, config.dataset.eval_split, data_dir=config.dataset.data_dir
    )

    state = create_state(config, mesh)
    checkpoints = Checkpoints(
        os.path.join(workdir, CHECKPOINT_DIR),
        max_to_keep=config.train.keep_checkpoints,
        async_save=config.train.async_checkpoints,
    )
    writer = None
    try:
        state, start_step, unreadable = checkpoints.restore_newest_readable(state)
        for bad in unreadable:
            logger.warning(
                "checkpoint %d unreadable (%s): resuming from %s%s",
                bad.step,
                bad.error,
                start_step or "scratch",
                f"; moved it to {bad.moved_to}" if bad.moved_to else "; deleted it",
            )
        if start_step:
            logger.info("Resuming from the checkpoint of step %d in %s", start_step, workdir)
        if is_chief:
            _write_config(config, workdir)
        writer = MetricsWriter(workdir, resume_step=start_step, enabled=is_chief)
        state = _train(config, state, mesh, start_step, checkpoints, writer, evaluator)
        # The final checkpoint is on disk before evaluating: a signal then loses nothing.
        checkpoints.wait()
        logger.info(
            "Process %d of %d: parameters of step %d have fingerprint %s.",
            jax.process_index(),
            jax.process_count(),
            int(state.step),
            params_fingerprint(state.params),
        )

        keep = config.eval.num_draw_images
        result = evaluate(state, config, mesh, evaluator, keep_images=keep)
        step = int(state.step)
        writer.write(step, {f"eval/{name}": value for name, value in result.metrics.items()})
        if is_chief:
            write_metrics(result.metrics, workdir)
            draw_detections(
                os.path.join(workdir, "detections.png"),
                result.images,
                spec.class_names,
                score_threshold=config.eval.draw_score_threshold,
                max_per_image=config.eval.draw_max_per_image,
            )
        logger.info("Step %d: %s", step, json.dumps(result.metrics))
        return result.metrics
    finally:
        # Let pending (good) checkpoint writes finish even when training failed.
        checkpoints.close()
        if writer is not None:
            writer.close()


def params_fingerprint(params: Any) -> str:
    """A short sha256 hex digest of this process's replica of ``params``.

    Equal fingerprints mean bit-identical parameters: the processes of a
    multi-host run (each logs its own) or two runs of the same config.
    """
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        local = np.asarray(leaf.addressable_data(0) if isinstance(leaf, jax.Array) else leaf)
        digest.update(f"{jax.tree_util.keystr(path)}:{local.dtype}{local.shape}".encode())
        digest.update(np.ascontiguousarray(local).tobytes())
    return digest.hexdigest()[:16]


def _fetch_finite(
    pending: list[tuple[int, dict[str, jax.Array]]], checkpoints: Checkpoints
) -> list[dict[str, float]]:
    """The pending steps' metrics on the host (one transfer), each step checked in order.

    Raises:
      NonFiniteLossError: at the first step with a non-finite loss or gradient norm
        (a NaN gradient spoils every state after it), once pending saves are done.
    """
    fetched = []
    for step, values in jax.device_get(pending):
        for name, what in (("loss", "loss"), ("grad_norm", "gradient")):
            if not math.isfinite(value := float(values[name])):
                checkpoints.wait()
                raise NonFiniteLossError(
                    step, value, checkpoints.latest_step(), checkpoints.directory, what=what
                )
        fetched.append(values)
    return fetched


def _train(
    config: ml_collections.ConfigDict,
    state: TrainState,
    mesh: Mesh,
    start_step: int,
    checkpoints: Checkpoints,
    writer: MetricsWriter,
    evaluator: CocoEvaluator,
) -> TrainState:
    """Steps ``start_step + 1 .. config.train.steps``; returns the final state."""
    total = config.train.steps
    if start_step >= total:
        if start_step > total:
            logger.warning("The checkpoint (step %d) is past train.steps=%d.", start_step, total)
        return state
    train = config.train
    batches = input_data.train_batches(config, start_step=start_step)
    window = _Window()
    pending: list[tuple[int, dict[str, jax.Array]]] = []
    bar = tqdm(
        total=total,
        initial=start_step,
        unit="step",
        desc="train",
        disable=jax.process_index() != 0,
        dynamic_ncols=True,
    )
    interrupts.enter_loop()
    try:
        for step in range(start_step + 1, total + 1):
            batch = next(batches)
            state, metrics = train_step(
                state, shard_batch({key: batch[key] for key in input_data.TRAIN_KEYS}, mesh)
            )
            pending.append((step, metrics))
            bar.update(1)
            # SIGTERM or SIGINT (see interrupts): save this step, then stop. Across hosts,
            # JAX's preemption service picks the step for SIGTERM.
            if stop := interrupts.requested():
                interrupts.acknowledge()
            else:
                stop = interrupts.preempted(step)
            log_now = step % train.log_every == 0 or step == total or bool(stop)
            save_now = step % train.checkpoint_every == 0 or step == total or bool(stop)
            eval_now = bool(train.eval_every) and step % train.eval_every == 0 and step < total
            if not (log_now or save_now or eval_now):
                continue
            for values in _fetch_finite(pending, checkpoints):
                window.add(values)
            pending.clear()
            if log_now:
                record = window.record()
                writer.write(step, record)
                bar.set_postfix(
                    loss=f"{record['train/loss']:.4f}",
                    lr=f"{record.get('train/learning_rate', float('nan')):.2g}",
                    refresh=False,
                )
            if save_now:
                if not bool(all_finite(state.params)):  # Finite loss and gradient, yet overflow.
                    checkpoints.wait()
                    raise NonFiniteLossError(
                        step,
                        "nan/inf",
                        checkpoints.latest_step(),
                        checkpoints.directory,
                        what="parameters",
                    )
                checkpoints.save(state)
            if stop:
                checkpoints.wait()
                writer.flush()
                raise interrupts.Interrupted(stop, step, checkpoints.directory)
            if eval_now:
                metrics = evaluate(state, config, mesh, evaluator).metrics
                writer.write(step, {f"eval/{name}": value for name, value in metrics.items()})
                writer.flush()
                window.start = time.perf_counter()  # Evaluation time is not training speed.
    finally:
        interrupts.leave_loop()
        bar.close()
    return state
