"""Every setting ``ota-train`` reads, with defaults; the other configs start from this.

Not a config to run by itself (its name starts with ``_``): ``shapes``,
``smoke`` and ``coco_fcos_r50_ota_1x`` call `base_config` and change what they need.
"""

from __future__ import annotations

import dataclasses

import ml_collections
from ml_collections import config_dict

from ota_jax.assigners import ASSIGNERS
from ota_jax.detector import FCOSConfig, LossConfig

# Types of the fields whose default is None (a placeholder needs a type for command-line
# overrides; a field missing here still works from config files).
_TYPES_OF_NONE_DEFAULTS = {"backbone_width": int}


def _placeholders(cls: type, skip: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """A None placeholder, typed like the default, for each field of the dataclass ``cls``.

    Overriding one (``--config.model.overrides.fpn_width=64``) sets that field; the
    ones left None keep the library's default, so the defaults live in one place.
    """
    fields = {}
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        default = field.default
        kind = (
            type(default)
            if default is not None
            else _TYPES_OF_NONE_DEFAULTS.get(field.name, object)
        )
        fields[field.name] = config_dict.placeholder(kind)
    return ml_collections.ConfigDict(fields)


def base_config() -> ml_collections.ConfigDict:
    """The full tree of settings; see the comments for what each one does."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # Model initialisation and data order (shuffle, flips).

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "ota_shapes"  # A key of ota_jax.data.registry, or ota_shapes/<config>.
    config.dataset.data_dir = config_dict.placeholder(str)  # TFDS data_dir; None: TFDS default.
    config.dataset.train_split = config_dict.placeholder(str)  # None: the dataset's default.
    config.dataset.eval_split = config_dict.placeholder(str)
    config.dataset.image_size = (128, 128)  # (H, W): images are resized to fit, then padded.
    config.dataset.max_gt = 16  # Static ground-truth slots per image.
    config.dataset.shuffle_buffer = 1024
    config.dataset.cache = False  # Keep the encoded examples in memory (small datasets).

    config.model = ml_collections.ConfigDict()
    config.model.preset = "tiny"  # ota_jax.detector.fcos_config preset.
    # Every FCOSConfig field (but num_classes, from the dataset); None keeps the preset's.
    config.model.overrides = _placeholders(FCOSConfig, skip=("num_classes",))
    # A torchvision ResNet state dict (.pth, .safetensors or .npz) of the preset's depth:
    # ImageNet weights for the backbone (ota_jax.detector.load_torchvision_resnet), with
    # frozen BatchNorm and the stem and first stage frozen (detectron2/cvpods FREEZE_AT=2)
    # unless model.overrides say otherwise. None: the backbone starts from random weights.
    config.model.pretrained = config_dict.placeholder(str)

    config.loss = ml_collections.ConfigDict()
    config.loss.assigner = "ota"  # A name in ota_jax.assigners.ASSIGNERS.
    # Each assigner's settings, every field of its config class; None keeps the default.
    for name, spec in ASSIGNERS.items():
        config.loss[name] = _placeholders(spec.config_class, skip=("return_transport",))
    # The other LossConfig fields (weights, focal parameters); None keeps the default.
    config.loss.overrides = _placeholders(LossConfig, skip=("assigner", "assigner_config"))

    config.optimizer = ml_collections.ConfigDict()  # ota_jax.detector.OptimizerConfig fields.
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    # The schedule's horizon; None: train.steps (so --config.train.steps=N moves the
    # cosine schedule's end too). Set it to resume a run for more steps on the same schedule.
    config.optimizer.total_steps = config_dict.placeholder(int)
    config.optimizer.warmup_steps = 100
    config.optimizer.warmup_factor = 0.001
    config.optimizer.schedule = "cosine"
    config.optimizer.decay_steps = ()
    config.optimizer.decay_factor = 0.1
    config.optimizer.clip_norm = config_dict.placeholder(float)
    # Also decay conv biases and the per-level scales (cvpods' D2SGD); norms never.
    config.optimizer.decay_biases_and_scales = False

    config.train = ml_collections.ConfigDict()
    config.train.steps = 1000
    config.train.batch_size = 16  # Global batch over all devices and hosts.
    config.train.log_every = 50  # Steps between metrics records (and non-finite checks).
    config.train.checkpoint_every = 500  # Steps between checkpoints; one is also saved at the end.
    config.train.keep_checkpoints = 3
    config.train.async_checkpoints = True  # Write checkpoints while training goes on.
    config.train.eval_every = 0  # Steps between COCO evaluations; 0: only at the end.

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 50  # Global; the last batch is padded.
    config.eval.score_threshold = 0.05  # ota_jax.detector.PostprocessConfig fields.
    config.eval.pre_nms_topk = 1000
    config.eval.nms_iou_threshold = 0.6
    config.eval.max_detections = 100
    config.eval.num_draw_images = 6  # Validation images drawn in detections.png.
    config.eval.draw_score_threshold = 0.3  # Detections drawn score at least this.
    config.eval.draw_max_per_image = 20  # And are among the best this many of their image.
    return config
