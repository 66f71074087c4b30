"""Every run of ``ota-study``: the tiny FCOS on ``ota_shapes``, a short fixed budget.

``ota-study`` sets ``dataset.name``, ``loss.assigner`` and ``seed`` per run, and for
``ota_shapes/coco_like`` and ``ota_shapes/crowd`` the image size, levels and gt slots
(``ota_train.study.DATASET_SETTINGS``); the rest is shared. The budget is 500 steps of
16 images; the default study (4 assigners x coco_like at 384 px and crowd at 256 px x
3 seeds) is a multi-hour run on a 2-core CPU.
"""

from __future__ import annotations

import ml_collections

from ota_train.configs import shapes


def get_config() -> ml_collections.ConfigDict:
    """The shapes config, with room for the crowded variant's gts and a study budget."""
    config = shapes.get_config()
    config.dataset.max_gt = 48  # ota_shapes/crowded has up to 40 objects per image.
    # (ota-study raises it to 56 for ota_shapes/crowd, up to 50 objects per image.)
    config.train.steps = 500
    config.train.log_every = 25
    config.train.checkpoint_every = 250
    config.train.keep_checkpoints = 1
    config.optimizer.warmup_steps = 50
    config.eval.num_draw_images = 4
    return config
