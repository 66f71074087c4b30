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

from ota_jax.data import pipeline
from ota_train import builders

__all__ = ["TRAIN_KEYS", "eval_batches", "local_batch_size", "train_batches"]

# What the train step reads; ``image_id`` (int64) and friends stay on the host.
TRAIN_KEYS = ("image", "gt_boxes", "gt_labels", "gt_mask")


def local_batch_size(global_batch_size: int) -> int:
    """This host's share of a global batch."""
    count = jax.process_count()
    if global_batch_size % count:
        raise builders.ConfigError(
            f"batch size {global_batch_size} does not split over {count} hosts"
        )
    return global_batch_size // count


def train_batches(
    config: ml_collections.ConfigDict, *, start_step: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """This host's training batches from step ``start_step + 1`` on (endless).

    Args:
      config: the training config (``dataset``, ``train.batch_size``, ``seed``).
      start_step: optimizer steps already taken; their batches are skipped.
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
        start_index=start_step * local_batch_size(batch_size),
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
