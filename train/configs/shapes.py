"""The default: the tiny FCOS on ``ota_shapes`` (128x128), minutes on a laptop CPU.

ota-train --config shapes --workdir runs/shapes
"""

from __future__ import annotations

import ml_collections

from ota_train.configs._base import base_config


def get_config() -> ml_collections.ConfigDict:
    """ota_shapes/default, tiny preset, AdamW with a cosine schedule."""
    config = base_config()
    config.dataset.name = "ota_shapes"
    config.dataset.image_size = (128, 128)
    config.dataset.max_gt = 16
    config.dataset.cache = True  # 2000 PNGs of ~30 kB.

    config.model.preset = "tiny"

    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 5e-3
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_steps = 100
    config.optimizer.schedule = "cosine"
    config.optimizer.clip_norm = 10.0

    config.train.steps = 2500
    config.train.batch_size = 16
    config.train.log_every = 50
    config.train.checkpoint_every = 500
    config.eval.batch_size = 50
    config.eval.draw_score_threshold = 0.4
    return config
