"""Every run of ``ota-study``: the tiny FCOS on ``ota_shapes``, a short fixed budget.

``ota-study`` sets ``dataset.name``, ``loss.assigner`` and ``seed`` per run; the
rest is shared. The budget (500 steps of 16 images) keeps the default study
(7 assigners x 2 datasets x 3 seeds) under an hour on a 2-core CPU.
"""

from __future__ import annotations

import ml_collections

from ota_train.configs import shapes


def get_config() -> ml_collections.ConfigDict:
    """The shapes config, with room for the crowded variant's gts and a study budget."""
    config = shapes.get_config()
    config.dataset.max_gt = 48  # ota_shapes/crowded has up to 40 objects per image.
    config.train.steps = 500
    config.train.log_every = 25
    config.train.checkpoint_every = 250
    config.train.keep_checkpoints = 1
    config.optimizer.warmup_steps = 50
    config.eval.num_draw_images = 4
    return config
