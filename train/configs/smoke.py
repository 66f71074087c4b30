"""A few steps on ``ota_shapes/tiny`` (64x64, 16 training images): checks the plumbing.

ota-train --config smoke --workdir /tmp/smoke
"""

from __future__ import annotations

import ml_collections

from ota_train.configs._base import base_config


def get_config() -> ml_collections.ConfigDict:
    """Tiny data, tiny model, every step logged, checkpoints every 2 steps."""
    config = base_config()
    config.dataset.name = "ota_shapes/tiny"
    config.dataset.image_size = (64, 64)
    config.dataset.max_gt = 8
    config.dataset.shuffle_buffer = 16
    config.dataset.cache = True

    config.model.preset = "tiny"

    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 2
    config.optimizer.schedule = "cosine"
    config.optimizer.clip_norm = 10.0

    config.train.steps = 6
    config.train.batch_size = 4
    config.train.log_every = 1
    config.train.checkpoint_every = 2
    config.eval.batch_size = 4
    config.eval.num_draw_images = 4
    config.eval.draw_score_threshold = 0.05
    return config
