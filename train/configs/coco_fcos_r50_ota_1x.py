"""The OTA paper's COCO recipe: FCOS ResNet-50 + OTA, 1x schedule (90k steps at batch 16).

As the official code (``ota.res50.fpn.coco.800size.1x`` on cvpods): an
ImageNet-pretrained ResNet-50 with frozen BatchNorm and the stem and res2
frozen (``FREEZE_AT=2``), SGD momentum 0.9, lr 0.01, 90k steps, lr x0.1 at 60k
and 80k, linear warm-up over 1000 steps from lr/1000, weight decay 1e-4 on every
parameter but the GroupNorms' (cvpods' ``D2SGD``: ``WEIGHT_DECAY_NORM=0``, conv
biases and the per-level scales decayed, ``BIAS_LR_FACTOR=1``), the official
HEAD's losses, OTA's default assigner settings, random horizontal flips.

Pass the weights (nothing is downloaded at run time; docs/training.md shows the
torchvision line that saves them):

    ota-train --config coco_fcos_r50_ota_1x --config.dataset.data_dir=/data/tfds \
        --config.model.pretrained=/weights/resnet50.pth

Without ``model.pretrained`` the backbone uses GroupNorm and starts from random
weights, the log says so, and expect far less than the paper's 40.7 AP in 1x.

Differences, for static shapes and this library:

- The ImageNet weights are torchvision's (ResNet v1.5, stride on the 3x3 conv,
  RGB inputs normalised by torchvision's mean and std, as our input pipeline
  does), not the MSRA Caffe ResNet-50 that cvpods loads (stride on the 1x1,
  BGR inputs with the mean subtracted only).
- Anchor points sit at cell centres (``anchor_offset=0.5``); cvpods uses 0.0
  (see `ota_jax.detector.FCOSConfig`).
- Images are resized to fit 800x1333 and padded to a fixed 800x1344 (a
  multiple of the coarsest stride, 128). Landscape images get the paper's
  800-pixel short side; portrait ones are limited by the 800-pixel height.
- Compute is bfloat16 (parameters, assignment and losses stay float32).
"""

from __future__ import annotations

import ml_collections

from ota_train.configs._base import base_config


def get_config() -> ml_collections.ConfigDict:
    """COCO 2017, ResNet-50 FCOS with OTA, 90k steps at global batch 16."""
    config = base_config()
    config.dataset.name = "coco/2017"
    config.dataset.image_size = (800, 1344)
    config.dataset.max_gt = 100  # Most non-crowd boxes in one COCO 2017 train image: 93.
    config.dataset.shuffle_buffer = 1024
    config.dataset.cache = False

    config.model.preset = "resnet50"
    config.model.overrides.dtype = "bfloat16"

    config.loss.assigner = "ota"  # OTAConfig defaults are the official ones.
    # The LossConfig defaults are the official HEAD's (box_loss="giou").
    # With --config.model.pretrained=PATH: frozen BatchNorm, stem and res2 frozen
    # (ota_train.builders.PRETRAINED_DEFAULTS); without, GroupNorm from scratch.

    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.decay_biases_and_scales = True  # cvpods' D2SGD
    config.optimizer.warmup_steps = 1000
    config.optimizer.warmup_factor = 0.001
    config.optimizer.schedule = "step"
    config.optimizer.decay_steps = (60_000, 80_000)
    config.optimizer.decay_factor = 0.1

    config.train.steps = 90_000
    config.train.batch_size = 16
    config.train.log_every = 20
    config.train.checkpoint_every = 5000
    config.train.keep_checkpoints = 3
    config.train.eval_every = 10_000

    config.eval.batch_size = 16
    return config
