"""Every run of ``ota-study``: the tiny FCOS on ``ota_shapes``, a short fixed budget.

``ota-study`` sets ``dataset.name``, ``loss.assigner`` and ``seed`` per run, and for an
``ota_shapes`` variant its image size, gt slots and levels
(``ota_train.study.dataset_settings``); the rest is shared. The budget is 400 steps of
16 images with an evaluation every 100 steps (the learning curves of the report); the
default study (4 assigners x coco_like at 384 px and crowd at 256 px x 3 seeds) is
about three hours of runs on a 2-core CPU (docs/study.md).
"""

from __future__ import annotations

import ml_collections

from ota_train.configs import shapes


def get_config() -> ml_collections.ConfigDict:
    """The shapes config with the study's budget and evaluations."""
    config = shapes.get_config()
    config.train.steps = 400
    config.train.eval_every = 100
    config.train.log_every = 25
    config.train.checkpoint_every = 200
    config.train.keep_checkpoints = 1
    config.optimizer.warmup_steps = 50
    config.eval.num_draw_images = 4
    return config
