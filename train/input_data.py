"""The training stream and the evaluation pass of a config, as numpy batches.

The training stream is a pure function of ``(config, step)``: the data order
and the flips come from ``config.seed`` and the example's position in the
stream, and a run resumed at step ``s`` starts at position
``s * local_batch_size``, so it sees exactly the batches an uninterrupted run
would have seen from there on.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from ota_jax.data import pipeline, registry
from ota_train import builders

__all__ = ["TRAIN_KEYS", "eval_batches", "local_batch_size", "prepare_dataset", "train_batches"]

# What the train step reads; ``image_id`` (int64) and friends stay on the host.
TRAIN_KEYS = ("image", "gt_boxes", "gt_labels", "gt_mask")


def local_batch_size(global_batch_size: int, process_count: int | None = None) -> int:
    """One host's share of a global batch (``process_count`` defaults to this run's)."""
    count = jax.process_count() if process_count is None else process_count
    if global_batch_size % count:
        raise builders.ConfigError(
            f"batch size {global_batch_size} does not split over {count} hosts"
        )
    return global_batch_size // count


def prepare_dataset(config: ml_collections.ConfigDict) -> None:
    """Generates a locally made dataset (``ota_shapes``) once, before any process reads it.

    Process 0 generates it while the other processes wait at a barrier, then
    they read it (on a shared ``data_dir``) or generate their own copy (on a
    disk of their own; the data is the same). Without it, processes sharing a
    ``data_dir`` would all generate the data and collide. Datasets that are
    downloaded (COCO, VOC) are left alone: reading them reports missing data.
    Call it after ``jax.distributed.initialize()`` on every process.

    Raises:
      DatasetNotPreparedError: on processes other than 0, when process 0 could
        not generate the data (process 0 raises its own error).
    """
    name, data_dir = config.dataset.name, config.dataset.data_dir
    spec, tfds_name = registry.resolve(name)
    if not spec.auto_prepare:
        return
    failure = None
    if jax.process_index() == 0:
        try:
            registry.load_builder(name, data_dir=data_dir)
        except Exception as error:  # Raised below, once the others know.
            failure = error
    if jax.process_count() > 1:
        # The barrier carries process 0's outcome, so that a failure there stops
        # the others at once with a message, not later with a collective's timeout.
        prepared = multihost_utils.broadcast_one_to_all(np.int32(failure is None))
        if not prepared and failure is None:
            raise registry.DatasetNotPreparedError(
                f"Process 0 could not generate {tfds_name!r} in "
                f"{data_dir or '~/tensorflow_datasets'}: its log says why."
            )
    if failure is not None:
        raise failure


def train_batches(
    config: ml_collections.ConfigDict,
    *,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """This host's training batches from step ``start_step + 1`` on (endless).

    Args:
      config: the training config (``dataset``, ``train.batch_size``, ``seed``).
      start_step: optimizer steps already taken; their batches are skipped.
      process_index: the host whose slice to read; None for ``jax.process_index()``.
      process_count: the number of hosts; None for ``jax.process_count()``. With
        both, one process can read what each host of a multi-host run reads.
    """
    batch_size = config.train.batch_size
    return pipeline.make_iterator(
        config.dataset.name,
        config.dataset.train_split,
        data_dir=config.dataset.data_dir,
        image_size=builders.image_size(config),
        max_gt=config.dataset.max_gt,
        batch_size=batch_size,
        train=True,
        seed=config.seed,
        shuffle_buffer=config.dataset.shuffle_buffer,
        cache=config.dataset.cache,
        start_index=start_step * local_batch_size(batch_size, process_count),
        process_index=process_index,
        process_count=process_count,
    )


def eval_batches(config: ml_collections.ConfigDict) -> Iterator[dict[str, np.ndarray]]:
    """One pass over this host's slice of the evaluation split, padded batches flagged."""
    return pipeline.make_iterator(
        config.dataset.name,
        config.dataset.eval_split,
        data_dir=config.dataset.data_dir,
        image_size=builders.image_size(config),
        max_gt=config.dataset.max_gt,
        batch_size=config.eval.batch_size,
        train=False,
    )
