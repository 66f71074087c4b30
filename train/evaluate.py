"""COCO evaluation of a train state on the validation split (one pass, all hosts).

Every host runs the model on its slice of the split; the detections and the
image bookkeeping are gathered so that each host scores the whole split (the
chief writes the results). The first images are kept for `ota_train.visualize`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from ota_jax.data import pipeline
from ota_jax.detector import PostprocessConfig, TrainState, eval_step, shard_batch
from ota_jax.evaluation import CocoEvaluator
from ota_train import builders, input_data

__all__ = ["EvalImage", "Evaluation", "evaluate"]

_BOOKKEEPING = ("image_id", "scale", "orig_size", "valid")


class EvalImage(NamedTuple):
    """One validation image with its ground truth and detections, in its pixels.

    Attributes:
      image: ``[h, w, 3]`` uint8 RGB, the resized image without its padding.
      gt_boxes: ``[N, 4]`` xyxy; gt_labels: ``[N]`` contiguous labels.
      boxes: ``[K, 4]`` xyxy; scores: ``[K]``; classes: ``[K]`` (real detections only).
    """

    image: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


class Evaluation(NamedTuple):
    """``metrics`` (AP, AP50, AP75, APs, APm, APl) and the first ``images`` of the split."""

    metrics: dict[str, float]
    images: list[EvalImage]


def _to_host(tree, *, local: bool):
    """Global arrays (or host-local numpy) as numpy arrays of the whole global batch."""
    if local:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def _gather_bookkeeping(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every host's ``image_id``/``scale``/``orig_size``/``valid``, in process order."""
    if jax.process_count() == 1:
        return {key: batch[key] for key in _BOOKKEEPING}
    ids = np.asarray(batch["image_id"])
    if np.any(np.abs(ids) >= 2**31):
        # Gathering goes through JAX, whose default integers are 32 bits.
        raise ValueError("image ids beyond int32 cannot be gathered across hosts")
    local = {key: np.asarray(batch[key]) for key in _BOOKKEEPING}
    local["image_id"] = ids.astype(np.int32)
    gathered = multihost_utils.process_allgather(local, tiled=True)
    gathered["image_id"] = np.asarray(gathered["image_id"], np.int64)
    return gathered


def _eval_images(batch: dict[str, np.ndarray], detections, count: int) -> list[EvalImage]:
    """Up to ``count`` valid images of this host's batch, cropped to their content."""
    images = []
    for i in np.flatnonzero(batch["valid"])[:count]:
        height, width = batch["image"].shape[1:3]
        # The resized content sits top-left; the rest of the canvas is padding.
        content_w, content_h = np.minimum(
            np.round(batch["orig_size"][i][::-1] * batch["scale"][i]).astype(int), [width, height]
        )
        valid = np.asarray(detections.valid[i], bool)
        gt_mask = np.asarray(batch["gt_mask"][i], bool)
        images.append(
            EvalImage(
                image=pipeline.denormalize_image(batch["image"][i][:content_h, :content_w]),
                gt_boxes=np.asarray(batch["gt_boxes"][i])[gt_mask],
                gt_labels=np.asarray(batch["gt_labels"][i])[gt_mask],
                boxes=np.asarray(detections.boxes[i])[valid],
                scores=np.asarray(detections.scores[i])[valid],
                classes=np.asarray(detections.classes[i])[valid],
            )
        )
    return images


def evaluate(
    state: TrainState,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    evaluator: CocoEvaluator,
    *,
    postprocess: PostprocessConfig | None = None,
    keep_images: int = 0,
) -> Evaluation:
    """COCO box metrics of ``state`` on ``config``'s evaluation split.

    Args:
      state: the (replicated) train state.
      config: the training config (``dataset``, ``eval``).
      mesh: the data mesh the eval batches are sharded over.
      evaluator: a `CocoEvaluator` for the split (reset here before use).
      postprocess: inference settings (default: from ``config.eval``).
      keep_images: how many of the chief's first images to return for drawing.

    Returns:
      An `Evaluation`; ``images`` is empty on non-chief hosts.
    """
    postprocess = postprocess or builders.postprocess_config(config)
    local = jax.process_count() == 1
    evaluator.reset()
    kept: list[EvalImage] = []
    num_local = input_data.local_batch_size(config.eval.batch_size)
    for batch in input_data.eval_batches(config):
        images = shard_batch({"image": batch["image"]}, mesh)["image"]
        detections = _to_host(eval_step(state, images, postprocess), local=local)
        bookkeeping = _gather_bookkeeping(batch)
        evaluator.add_batch(
            bookkeeping, detections.boxes, detections.scores, detections.classes, detections.valid
        )
        if len(kept) < keep_images and jax.process_index() == 0:
            # The chief's images are the first rows of the global batch.
            mine = jax.tree.map(lambda x: x[:num_local], detections)
            kept += _eval_images(batch, mine, keep_images - len(kept))
    return Evaluation(evaluator.evaluate(), kept)
