"""Ground truth in original image pixels, the input of COCO evaluation.

``ImageGroundTruth`` is plain numpy; importing this module does not import
TensorFlow (``load_ground_truth`` does, when called).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["ImageGroundTruth", "load_ground_truth"]


class ImageGroundTruth(NamedTuple):
    """The annotations of one image, in its original pixels.

    Attributes:
      image_id: evaluation image id (as in the pipeline's ``image_id``).
      height: original image height in pixels.
      width: original image width in pixels.
      boxes: ``[N, 4]`` float32 xyxy pixels.
      labels: ``[N]`` int32 contiguous labels ``0..C-1``.
      areas: ``[N]`` float32 instance areas in pixels (segment area where the
        dataset has one, else box area); COCO's small/medium/large split uses it.
      is_crowd: ``[N]`` bool, regions whose detections are neither rewarded
        nor punished (COCO crowd, VOC difficult).
    """

    image_id: int
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    areas: np.ndarray
    is_crowd: np.ndarray


def load_ground_truth(
    name: str, split: str | None = None, *, data_dir: str | None = None
) -> list[ImageGroundTruth]:
    """All annotations of ``split`` (every host reads the whole split).

    Args:
      name: a key of ``registry.DATASETS`` or ``ota_shapes/<config>``.
      split: TFDS split; None for the dataset's default eval split.
      data_dir: TFDS data directory.

    Returns:
      One ``ImageGroundTruth`` per example, in dataset order.

    Raises:
      DatasetNotPreparedError: the data is not in ``data_dir``.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from ota_jax.data import pipeline

    dataset, _ = pipeline.read_examples(name, split, data_dir=data_dir)

    def image_size(encoded: tf.Tensor) -> tf.Tensor:
        # JPEG headers give the size without decoding the pixels.
        return tf.cond(
            tf.io.is_jpeg(encoded),
            lambda: tf.io.extract_jpeg_shape(encoded)[:2],
            lambda: tf.shape(tf.io.decode_image(encoded, channels=3, expand_animations=False))[:2],
        )

    def add_size(example: dict) -> dict:
        example = dict(example)
        example["size"] = image_size(example.pop("image"))
        return example

    records = []
    sized = dataset.map(add_size, num_parallel_calls=tf.data.AUTOTUNE)
    for example in tfds.as_numpy(sized):
        height, width = (int(v) for v in example["size"])
        ymin, xmin, ymax, xmax = np.clip(example["boxes"], 0.0, 1.0).T
        boxes = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=-1)
        boxes = boxes.reshape(-1, 4).astype(np.float32)
        if "areas" in example:
            areas = example["areas"].astype(np.float32)
        else:
            areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(np.float32)
        records.append(
            ImageGroundTruth(
                image_id=int(example["image_id"]),
                height=height,
                width=width,
                boxes=boxes,
                labels=example["labels"].astype(np.int32),
                areas=areas,
                is_crowd=example["ignore"].astype(bool),
            )
        )
    return records
