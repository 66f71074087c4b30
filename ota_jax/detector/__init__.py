"""Layer 2: a Flax NNX FCOS detector trained with OTA/SimOTA, no TensorFlow.

- `model`: `FCOS`, `FCOSConfig`, `fcos_config` presets, `FCOSOutput`, `decode_ltrb`.
- `losses`: `detection_loss` (assign + focal / GIoU / IoU-branch BCE).
- `pretrained`: `load_torchvision_resnet`, ImageNet weights for the backbone.
- `postprocess`: `postprocess` to fixed-size `Detections`, a jittable `nms`.
- `train_step`: `TrainState`, `make_optimizer`, `train_step`, `eval_step` and the
  data-parallel helpers `make_data_mesh`, `replicate`, `shard_batch`.

Needs Flax, which the core leaves out: ``pip install "ota-jax[detector]"`` (or ``[train]``).
"""

try:
    import flax  # noqa: F401
except ImportError as error:
    raise ImportError(
        "ota_jax.detector needs Flax, which `pip install ota-jax` leaves out: "
        'pip install "ota-jax[detector]" (or "ota-jax[train]")'
    ) from error

from ota_jax.detector.losses import (
    LossConfig,
    assign_targets,
    detection_loss,
    losses_from_assignment,
)
from ota_jax.detector.model import FCOS, FCOSConfig, FCOSOutput, decode_ltrb, fcos_config
from ota_jax.detector.postprocess import (
    Detections,
    PostprocessConfig,
    detection_scores,
    nms,
    postprocess,
)
from ota_jax.detector.pretrained import load_torchvision_resnet
from ota_jax.detector.train_step import (
    OptimizerConfig,
    TrainState,
    create_train_state,
    eval_step,
    make_data_mesh,
    make_optimizer,
    make_schedule,
    replicate,
    shard_batch,
    train_step,
    weight_decay_mask,
)

__all__ = [
    "FCOS",
    "Detections",
    "FCOSConfig",
    "FCOSOutput",
    "LossConfig",
    "OptimizerConfig",
    "PostprocessConfig",
    "TrainState",
    "assign_targets",
    "create_train_state",
    "decode_ltrb",
    "detection_loss",
    "detection_scores",
    "eval_step",
    "fcos_config",
    "load_torchvision_resnet",
    "losses_from_assignment",
    "make_data_mesh",
    "make_optimizer",
    "make_schedule",
    "nms",
    "postprocess",
    "replicate",
    "shard_batch",
    "train_step",
    "weight_decay_mask",
]
