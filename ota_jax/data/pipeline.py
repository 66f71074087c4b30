"""tf.data input pipelines: TFDS detection datasets to static-shape numpy batches.

Every batch is a dict of numpy arrays with a leading per-host batch axis ``B``:

* ``image``: ``[B, H, W, 3]`` float32, ``(rgb / 255 - MEAN_RGB) / STDDEV_RGB``; the
  resized image sits in the top-left corner, the rest is 0 (the mean colour).
* ``gt_boxes``: ``[B, max_gt, 4]`` float32 xyxy pixels of the resized image.
* ``gt_labels``: ``[B, max_gt]`` int32 contiguous labels ``0..C-1``.
* ``gt_mask``: ``[B, max_gt]`` bool, False for padding (padded boxes/labels are 0).
* ``image_id``: ``[B]`` int64 evaluation image id (-1 for padding images). Keep it
  on the host: JAX without x64 would truncate it.
* ``scale``: ``[B, 2]`` float32 ``(x_scale, y_scale)``, resized = original * scale.
* ``orig_size``: ``[B, 2]`` int32 original ``(height, width)``.
* ``valid``: ``[B]`` bool, False for the images that pad the last eval batches.

Images are resized keeping their aspect ratio to fit ``image_size`` and padded
at the bottom and right. Boxes marked crowd (COCO) or difficult (VOC) are not
training targets and are left out of ``gt_*``; more than ``max_gt`` boxes are
truncated in dataset order. Training flips images left-right at random,
deterministically given ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ota_jax.data import registry

__all__ = [
    "MEAN_RGB",
    "STDDEV_RGB",
    "denormalize_image",
    "flip_left_right",
    "make_dataset",
    "make_iterator",
    "read_examples",
]

MEAN_RGB = (0.485, 0.456, 0.406)
STDDEV_RGB = (0.229, 0.224, 0.225)


def _hide_gpus_from_tf() -> None:
    """Keeps TensorFlow on the CPU so it neither takes nor pre-allocates accelerator memory."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        pass  # TF already initialised its devices; they stay as they are.


def _id_from_filename(filename: tf.Tensor) -> tf.Tensor:
    """int64 id from a file name: its digits (VOC ``2008_000123.jpg`` -> 2008000123).

    Names without digits get a hash, so every image still has an id.
    """
    digits = tf.strings.regex_replace(filename, "[^0-9]", "")
    digits = tf.strings.substr(digits, 0, 18)  # Stays inside int64.
    return tf.cond(
        tf.strings.length(digits) > 0,
        lambda: tf.strings.to_number(digits, tf.int64),
        lambda: tf.strings.to_hash_bucket_fast(filename, 2**31 - 1),
    )


def _standardize_fn(spec: registry.DatasetSpec):
    """A map function from one dataset's TFDS features to the common fields."""

    def standardize(example: dict) -> dict:
        objects = example["objects"]
        if spec.has_image_id:
            image_id = tf.cast(example["image/id"], tf.int64)
        else:
            image_id = _id_from_filename(example["image/filename"])
        out = {
            "image": example["image"],  # Still encoded: decoding waits until after shuffling.
            "boxes": tf.reshape(tf.cast(objects["bbox"], tf.float32), [-1, 4]),
            "labels": tf.cast(objects["label"], tf.int32),
            "ignore": tf.cast(objects[spec.ignore_key], tf.bool),
            "image_id": image_id,
        }
        if spec.area_key is not None:
            out["areas"] = tf.cast(objects[spec.area_key], tf.float32)
        return out

    return standardize


def read_examples(
    name: str,
    split: str | None = None,
    *,
    data_dir: str | None = None,
    train: bool = False,
    seed: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> tuple[tf.data.Dataset, registry.DatasetSpec]:
    """This host's slice of ``split``, in a common format, images still encoded.

    Args:
      name: a key of ``registry.DATASETS`` or ``ota_shapes/<config>``.
      split: TFDS split; None for the dataset's default train or eval split.
      data_dir: TFDS data directory (None: TFDS's default).
      train: shuffle the input files (with ``seed``).
      seed: file shuffling seed.
      process_index: this host's index.
      process_count: number of hosts; each reads an equal, disjoint slice.

    Returns:
      The dataset of dicts: ``image`` scalar string (encoded), ``boxes`` ``[N, 4]``
      float32 normalised yxyx, ``labels`` ``[N]`` int32, ``ignore`` ``[N]`` bool,
      ``image_id`` int64 and, when the dataset has them, ``areas`` ``[N]`` float32;
      and the dataset's table entry.

    Raises:
      DatasetNotPreparedError: the data is not in ``data_dir``.
    """
    _hide_gpus_from_tf()
    spec, _ = registry.resolve(name)
    split = split or (spec.train_split if train else spec.eval_split)
    builder = registry.load_builder(name, data_dir=data_dir)
    host_split = tfds.even_splits(split, n=process_count)[process_index]
    try:
        dataset = builder.as_dataset(
            split=host_split,
            shuffle_files=train,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
    except AssertionError as error:  # TFDS's way of saying "no data here".
        if "could not find data" not in str(error):
            raise
        raise registry.not_prepared_error(name, data_dir) from None
    return dataset.map(_standardize_fn(spec), num_parallel_calls=tf.data.AUTOTUNE), spec


def flip_left_right(image: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mirrors ``image`` ``[h, w, C]`` and its ``[N, 4]`` normalised yxyx ``boxes``."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    return tf.image.flip_left_right(image), tf.stack([ymin, 1 - xmax, ymax, 1 - xmin], axis=-1)


def _preprocess(
    example: dict,
    flip_seed: tf.Tensor | None,
    *,
    image_size: tuple[int, int],
    max_gt: int,
) -> dict:
    """Decodes, maybe flips, resizes, normalises and pads one example (see module doc)."""
    height, width = image_size
    image = tf.io.decode_image(example["image"], channels=3, expand_animations=False)
    orig_size = tf.shape(image)[:2]
    boxes = tf.clip_by_value(example["boxes"], 0.0, 1.0)
    if flip_seed is not None:
        flip = tf.random.stateless_uniform([], seed=flip_seed) < 0.5
        image, boxes = tf.cond(flip, lambda: flip_left_right(image, boxes), lambda: (image, boxes))

    orig_hw = tf.cast(orig_size, tf.float32)
    scale = tf.minimum(height / orig_hw[0], width / orig_hw[1])
    resized_hw = tf.cast(tf.round(orig_hw * scale), tf.int32)
    resized_hw = tf.clip_by_value(resized_hw, 1, [height, width])
    image = tf.image.resize(image, resized_hw, antialias=True)  # float32 in [0, 255]
    image = (image / 255.0 - MEAN_RGB) / STDDEV_RGB
    image = tf.image.pad_to_bounding_box(image, 0, 0, height, width)

    # Boxes scale with the resized content exactly (per axis), not with the
    # rounded-off scalar ``scale``, so they match the pixels.
    resized_h, resized_w = tf.unstack(tf.cast(resized_hw, tf.float32))
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    xyxy = tf.stack([xmin * resized_w, ymin * resized_h, xmax * resized_w, ymax * resized_h], -1)
    keep = ~example["ignore"] & (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    xyxy = tf.boolean_mask(xyxy, keep)[:max_gt]
    labels = tf.boolean_mask(example["labels"], keep)[:max_gt]
    num_gt = tf.shape(labels)[0]
    padding = max_gt - num_gt
    return {
        "image": tf.ensure_shape(image, [height, width, 3]),
        "gt_boxes": tf.ensure_shape(tf.pad(xyxy, [[0, padding], [0, 0]]), [max_gt, 4]),
        "gt_labels": tf.ensure_shape(tf.pad(labels, [[0, padding]]), [max_gt]),
        "gt_mask": tf.range(max_gt) < num_gt,
        "image_id": example["image_id"],
        "scale": tf.stack([resized_w / orig_hw[1], resized_h / orig_hw[0]]),
        "orig_size": orig_size,
        "valid": tf.constant(True),
    }


def _pad_batch(batch: dict, batch_size: int) -> dict:
    """Pads a short last batch to ``batch_size`` with invalid images (``image_id`` -1)."""
    missing = batch_size - tf.shape(batch["valid"])[0]

    def pad(x: tf.Tensor) -> tf.Tensor:
        x = tf.pad(x, [[0, missing]] + [[0, 0]] * (x.shape.rank - 1))
        return tf.ensure_shape(x, [batch_size, *x.shape[1:]])

    padded = {key: pad(value) for key, value in batch.items()}
    padded["image_id"] = tf.where(padded["valid"], padded["image_id"], tf.constant(-1, tf.int64))
    return padded


def _empty_batch(element_spec: dict) -> dict:
    """An all-padding batch with the structure of ``element_spec``."""
    batch = {key: tf.zeros(spec.shape, spec.dtype) for key, spec in element_spec.items()}
    batch["image_id"] = batch["image_id"] - 1
    return batch


def _max_host_examples(name: str, split: str, *, data_dir: str | None, process_count: int) -> int:
    """The most examples any host gets from ``split``: every host runs that many eval steps."""
    builder = registry.load_builder(name, data_dir=data_dir)
    shards = tfds.even_splits(split, n=process_count)
    try:
        return max(builder.info.splits[shard].num_examples for shard in shards)
    except KeyError:  # No split metadata (mocked datasets): count the examples.
        pass
    sizes = []
    for process_index in range(process_count):
        dataset, _ = read_examples(
            name, split, data_dir=data_dir, process_index=process_index, process_count=process_count
        )
        cardinality = int(dataset.cardinality())
        sizes.append(
            cardinality if cardinality >= 0 else int(dataset.reduce(0, lambda n, _: n + 1))
        )
    return max(sizes)


def make_dataset(
    name: str = "ota_shapes",
    split: str | None = None,
    *,
    data_dir: str | None = None,
    image_size: int | tuple[int, int],
    max_gt: int,
    batch_size: int,
    train: bool,
    seed: int = 0,
    shuffle_buffer: int = 1024,
    cache: bool = False,
    start_index: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> tf.data.Dataset:
    """Batches of one host's slice of a TFDS detection dataset (see module doc for keys).

    Training: the stream repeats forever, is shuffled, randomly flipped and
    drops the last partial batch. Evaluation: one pass in dataset order; the
    last batches are padded with ``valid=False`` images so that every host runs
    the same number of steps (``len(dataset)``) and every image is seen once.

    Args:
      name: a key of ``registry.DATASETS`` or ``ota_shapes/<config>``. The
        synthetic dataset is generated in ``data_dir`` on first use.
      split: TFDS split; None for the dataset's default train or eval split.
      data_dir: TFDS data directory (None: TFDS's default).
      image_size: output ``H`` (square) or ``(H, W)``.
      max_gt: static number of ground-truth slots per image.
      batch_size: global batch size; each host yields
        ``batch_size // process_count`` images per batch.
      train: training stream (shuffle, flip, repeat) or one evaluation pass.
      seed: seed of file order, shuffling and flips; same seed, same batches.
      shuffle_buffer: examples in the shuffle buffer (they are kept encoded).
      cache: keep the encoded examples in memory after the first pass (small
        datasets such as ``ota_shapes``).
      start_index: training only: the position in this host's example stream
        to start at, e.g. ``step * batch_size // process_count`` to resume a
        run. The skipped examples are never decoded, and the stream goes on
        exactly as an uninterrupted one would (same order, same flips).
      process_index: this host; None for ``jax.process_index()``.
      process_count: number of hosts; None for ``jax.process_count()``.

    Returns:
      A ``tf.data.Dataset`` of dicts of tensors; ``tfds.as_numpy`` (or
      ``make_iterator``) turns it into numpy batches.

    Raises:
      DatasetNotPreparedError: COCO or VOC data is not in ``data_dir``.
      ValueError: ``batch_size`` does not split evenly across hosts, or
        ``start_index`` is negative or given for evaluation.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if batch_size % process_count:
        raise ValueError(f"batch_size {batch_size} is not divisible by {process_count} hosts.")
    local_batch_size = batch_size // process_count
    if start_index < 0 or (start_index and not train):
        raise ValueError(f"start_index must be >= 0 and only for training (got {start_index}).")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    spec, _ = registry.resolve(name)
    split = split or (spec.train_split if train else spec.eval_split)

    dataset, _ = read_examples(
        name,
        split,
        data_dir=data_dir,
        train=train,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
    if cache:
        dataset = dataset.cache()

    def preprocess(example: dict, flip_seed: tf.Tensor | None = None) -> dict:
        return _preprocess(example, flip_seed, image_size=tuple(image_size), max_gt=max_gt)

    if train:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.repeat()
        # A per-example counter makes each flip a pure function of (seed, position).
        dataset = dataset.enumerate()
        if start_index:
            # Skipped before decoding: cheap, and the indices (flip seeds) stay as they were.
            dataset = dataset.skip(start_index)
        dataset = dataset.map(
            lambda index, example: preprocess(example, tf.stack([tf.cast(seed, tf.int64), index])),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        dataset = dataset.batch(local_batch_size, drop_remainder=True)
    else:
        num_batches = math.ceil(
            _max_host_examples(name, split, data_dir=data_dir, process_count=process_count)
            / local_batch_size
        )
        dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.batch(local_batch_size).map(lambda b: _pad_batch(b, local_batch_size))
        filler = tf.data.Dataset.from_tensors(_empty_batch(dataset.element_spec)).repeat()
        dataset = dataset.concatenate(filler).take(num_batches)

    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def make_iterator(*args, **kwargs) -> Iterator[dict[str, np.ndarray]]:
    """``make_dataset(*args, **kwargs)`` as an iterator of numpy batches."""
    return iter(tfds.as_numpy(make_dataset(*args, **kwargs)))


def denormalize_image(image: np.ndarray) -> np.ndarray:
    """``[..., H, W, 3]`` normalised float image back to uint8 RGB (for plots)."""
    rgb = (np.asarray(image) * np.asarray(STDDEV_RGB) + np.asarray(MEAN_RGB)) * 255.0
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
