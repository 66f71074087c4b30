"""tf.data pipelines: static shapes, box geometry, flips, padding, determinism, COCO/VOC."""

from __future__ import annotations

import functools
import pathlib

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from ota_jax.data import ground_truth, pipeline, registry, shapes  # noqa: E402

TINY = "ota_shapes/tiny"
TINY_SIZE = 64  # The tiny config's image size.
NUM_VALIDATION = 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tfds")
    registry.load_builder(TINY, data_dir=str(path))
    return str(path)


@pytest.fixture(scope="module")
def annotations(data_dir) -> dict[int, ground_truth.ImageGroundTruth]:
    records = ground_truth.load_ground_truth(TINY, data_dir=data_dir)
    return {record.image_id: record for record in records}


def _batches(data_dir: str, count: int | None = None, **kwargs) -> list[dict[str, np.ndarray]]:
    kwargs = {"image_size": TINY_SIZE, "max_gt": 8, "batch_size": 4, "train": False} | kwargs
    dataset = pipeline.make_dataset(TINY, data_dir=data_dir, **kwargs)
    if count is not None:
        dataset = dataset.take(count)
    return list(tfds.as_numpy(dataset))


def test_train_batch_shapes_dtypes_and_padding(data_dir):
    (batch,) = _batches(data_dir, 1, image_size=(48, 80), max_gt=8, batch_size=4, train=True)
    expected = {
        "image": ((4, 48, 80, 3), np.float32),
        "gt_boxes": ((4, 8, 4), np.float32),
        "gt_labels": ((4, 8), np.int32),
        "gt_mask": ((4, 8), np.bool_),
        "image_id": ((4,), np.int64),
        "scale": ((4, 2), np.float32),
        "orig_size": ((4, 2), np.int32),
        "valid": ((4,), np.bool_),
    }
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
    assert batch["valid"].all()
    np.testing.assert_array_equal(batch["orig_size"], TINY_SIZE)
    np.testing.assert_allclose(batch["scale"], 48 / TINY_SIZE)
    # 64x64 -> 48x48 content in the top-left corner; the rest is 0 (mean colour).
    assert np.all(batch["image"][:, :, 48:] == 0)
    assert np.any(batch["image"][:, :, :48] != 0)
    mask = batch["gt_mask"]
    assert mask.any()
    # Valid ground truth comes first, padding after it, and padding is zeros.
    np.testing.assert_array_equal(mask, np.arange(8) < mask.sum(1, keepdims=True))
    assert np.all(batch["gt_boxes"][~mask] == 0) and np.all(batch["gt_labels"][~mask] == 0)
    boxes = batch["gt_boxes"][mask]
    assert np.all((boxes >= 0) & (boxes <= 48)) and np.all(boxes[:, 2:] > boxes[:, :2])
    labels = batch["gt_labels"][mask]
    assert np.all((labels >= 0) & (labels < len(shapes.CLASS_NAMES)))


def test_eval_boxes_are_original_boxes_times_scale(data_dir, annotations):
    for batch in _batches(data_dir, image_size=96, max_gt=8):
        for i in np.flatnonzero(batch["valid"]):
            record = annotations[int(batch["image_id"][i])]
            n = len(record.labels)
            np.testing.assert_array_equal(batch["gt_mask"][i], np.arange(8) < n)
            np.testing.assert_allclose(batch["gt_boxes"][i, :n], record.boxes * 1.5, atol=1e-4)
            np.testing.assert_array_equal(batch["gt_labels"][i, :n], record.labels)
            np.testing.assert_allclose(batch["scale"][i], [1.5, 1.5])


def test_resized_box_pixels_land_inside_their_box(data_dir):
    config = next(c for c in shapes.OtaShapes.BUILDER_CONFIGS if c.name == "tiny")
    red = [i for i, name in enumerate(shapes.CLASS_NAMES) if name.startswith("red")]
    checked = 0
    for batch in _batches(data_dir, image_size=2 * TINY_SIZE, max_gt=8):
        rgb = pipeline.denormalize_image(batch["image"]).astype(np.int32)
        for i in np.flatnonzero(batch["valid"]):
            index = int(batch["image_id"][i]) - shapes.image_id("validation", 0)
            scene = shapes.render_example(config, "validation", index)
            # Upsampled 2x, each object's pixels are its instance pixels doubled.
            instances = scene.instance_map.repeat(2, axis=0).repeat(2, axis=1)
            for k in np.flatnonzero(batch["gt_mask"][i]):
                rows, cols = np.nonzero(instances == k)
                tight = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
                np.testing.assert_allclose(batch["gt_boxes"][i, k], tight, atol=1e-4)
                # The image pixels there have the object's colour (away from the
                # blurred outline, where a neighbour's colour may bleed in).
                core = np.zeros_like(instances, bool)
                core[1:-1, 1:-1] = (
                    (instances[1:-1, 1:-1] == k)
                    & (instances[:-2, 1:-1] == k)
                    & (instances[2:, 1:-1] == k)
                    & (instances[1:-1, :-2] == k)
                    & (instances[1:-1, 2:] == k)
                )
                redness = (rgb[i, ..., 0] - rgb[i, ..., 2])[core]
                if batch["gt_labels"][i, k] in red:
                    assert np.all(redness > 60)
                else:
                    assert np.all(redness < -60)
                checked += 1
    assert checked > 10


def test_ground_truth_fed_back_as_detections_scores_ap_one(data_dir):
    from ota_jax.evaluation import CocoEvaluator

    evaluator = CocoEvaluator.from_dataset(TINY, data_dir=data_dir)
    for batch in _batches(data_dir, image_size=(96, 80), max_gt=8):
        # Detections in resized pixels, mapped back by ``scale`` inside add_batch.
        scores = np.where(batch["gt_mask"], 0.9, 0.0)
        evaluator.add_batch(
            batch, batch["gt_boxes"], scores, batch["gt_labels"], mask=batch["gt_mask"]
        )
    metrics = evaluator.evaluate()
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP75"] == pytest.approx(1.0)


def test_flip_twice_is_identity():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.integers(0, 255, (5, 7, 3)), tf.uint8)
    boxes = tf.constant([[0.1, 0.2, 0.5, 0.3], [0.0, 0.0, 1.0, 1.0]], tf.float32)
    flipped_image, flipped_boxes = pipeline.flip_left_right(image, boxes)
    np.testing.assert_allclose(flipped_boxes[0], [0.1, 0.7, 0.5, 0.8], atol=1e-6)
    np.testing.assert_array_equal(flipped_image[:, 0], image[:, -1])
    again_image, again_boxes = pipeline.flip_left_right(flipped_image, flipped_boxes)
    np.testing.assert_array_equal(again_image, image)
    np.testing.assert_allclose(again_boxes, boxes, atol=1e-6)


def test_training_flips_image_and_boxes_together(data_dir):
    reference = {}
    for batch in _batches(data_dir, max_gt=8):
        for i in np.flatnonzero(batch["valid"]):
            reference[int(batch["image_id"][i])] = {k: v[i] for k, v in batch.items()}
    flipped = kept = 0
    # Compare train-mode and eval-mode outputs of the same (validation) images.
    train = _batches(data_dir, 6, max_gt=8, train=True, seed=5, split="validation")
    for batch in train:
        for i, image_id in enumerate(batch["image_id"]):
            ref = reference[int(image_id)]
            mask = ref["gt_mask"]
            np.testing.assert_array_equal(batch["gt_mask"][i], mask)
            if np.allclose(batch["image"][i], ref["image"], atol=1e-5):
                kept += 1
                np.testing.assert_allclose(batch["gt_boxes"][i], ref["gt_boxes"], atol=1e-4)
            else:
                flipped += 1
                np.testing.assert_allclose(batch["image"][i], ref["image"][:, ::-1], atol=1e-5)
                x1, y1, x2, y2 = ref["gt_boxes"][mask].T
                mirrored = np.stack([TINY_SIZE - x2, y1, TINY_SIZE - x1, y2], axis=-1)
                np.testing.assert_allclose(batch["gt_boxes"][i][mask], mirrored, atol=1e-4)
    assert flipped > 0 and kept > 0


def test_truncates_to_max_gt(data_dir, annotations):
    for batch in _batches(data_dir, max_gt=2):
        for i in np.flatnonzero(batch["valid"]):
            n = len(annotations[int(batch["image_id"][i])].labels)
            assert batch["gt_mask"][i].sum() == min(n, 2)


def test_same_seed_same_batches(data_dir):
    kwargs = {"train": True, "batch_size": 4, "count": 5}
    first = _batches(data_dir, seed=1, **kwargs)
    second = _batches(data_dir, seed=1, **kwargs)
    other = _batches(data_dir, seed=2, **kwargs)
    for a, b in zip(first, second, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    order = np.concatenate([b["image_id"] for b in first])
    assert not np.array_equal(order, np.concatenate([b["image_id"] for b in other]))


def test_start_index_continues_the_stream_exactly(data_dir):
    """A resumed stream (several epochs of 16 images in) equals the uninterrupted one."""
    kwargs = {"train": True, "batch_size": 4, "seed": 3, "cache": True}
    full = _batches(data_dir, 12, **kwargs)
    resumed = _batches(data_dir, 3, start_index=9 * 4, **kwargs)
    for a, b in zip(full[9:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    with pytest.raises(ValueError, match="start_index"):
        _batches(data_dir, 1, start_index=4)  # Evaluation has no stream position.


def test_eval_pass_sees_every_image_once_and_pads_the_last_batch(data_dir, annotations):
    dataset = pipeline.make_dataset(
        TINY, data_dir=data_dir, image_size=TINY_SIZE, max_gt=8, batch_size=3, train=False
    )
    assert len(dataset) == 3  # ceil(8 / 3)
    batches = list(tfds.as_numpy(dataset))
    np.testing.assert_array_equal(batches[-1]["valid"], [True, True, False])
    assert batches[-1]["image_id"][-1] == -1
    assert not batches[-1]["gt_mask"][-1].any()
    ids = np.concatenate([b["image_id"][b["valid"]] for b in batches])
    assert sorted(ids.tolist()) == sorted(annotations)


def test_hosts_read_disjoint_slices_in_equal_steps(data_dir):
    per_host = []
    for process_index in range(2):
        dataset = pipeline.make_dataset(
            TINY,
            data_dir=data_dir,
            image_size=TINY_SIZE,
            max_gt=8,
            batch_size=6,  # 3 per host: 4 images per host -> 2 steps, the last padded.
            train=False,
            process_index=process_index,
            process_count=2,
        )
        assert len(dataset) == 2
        batches = list(tfds.as_numpy(dataset))
        assert batches[0]["image"].shape[0] == 3
        per_host.append({int(i) for b in batches for i in b["image_id"][b["valid"]]})
    assert not per_host[0] & per_host[1]
    assert len(per_host[0] | per_host[1]) == NUM_VALIDATION


def test_batch_size_must_split_across_hosts(data_dir):
    with pytest.raises(ValueError, match="divisible"):
        _batches(data_dir, batch_size=3, process_index=0, process_count=2)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="Unknown dataset"):
        registry.resolve("imagenet2012")


@pytest.mark.parametrize("name", ["coco/2017", "voc/2007"])
def test_missing_data_raises_a_clear_error(name, tmp_path):
    with pytest.raises(registry.DatasetNotPreparedError, match=f"tfds build {name}") as info:
        pipeline.make_dataset(
            name, data_dir=str(tmp_path), image_size=64, max_gt=4, batch_size=2, train=True
        )
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_registry_table_is_consistent():
    for name, spec in registry.DATASETS.items():
        assert len(spec.category_ids) == spec.num_classes == len(set(spec.category_ids)), name
    assert registry.DATASETS["coco/2017"].num_classes == 80
    assert registry.DATASETS["coco/2017"].category_ids[-1] == 90
    assert registry.DATASETS["voc/2007"].num_classes == 20


# --- COCO and VOC through their real TFDS builders, on mocked data ---------------------

NUM_FAKE = 5


def _fake_value(feature, rng: np.random.Generator, index: int):
    """A random value of one TFDS feature (the kinds COCO and VOC use)."""
    features = tfds.features
    if isinstance(feature, features.FeaturesDict):
        return {key: _fake_value(value, rng, index) for key, value in feature.items()}
    if isinstance(feature, features.Sequence):
        return [_fake_value(feature.feature, rng, index) for _ in range(rng.integers(0, 6))]
    if isinstance(feature, features.Image):
        height, width = rng.integers(30, 90, size=2)
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if isinstance(feature, features.BBoxFeature):
        ys, xs = np.sort(rng.uniform(0, 1, size=(2, 2)), axis=1)
        return features.BBox(ymin=ys[0], xmin=xs[0], ymax=ys[1], xmax=xs[1])
    if isinstance(feature, features.ClassLabel):
        return int(rng.integers(feature.num_classes))
    if isinstance(feature, features.Text):
        return f"{2000 + index:06d}.jpg"
    if feature.dtype == np.bool_:
        return bool(rng.random() < 0.2)
    return index + 1  # image/id, objects/id, objects/area


def _fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    """Replaces TFDS's random mock: consistent sequence lengths, real encode/decode path."""
    del split, read_config, shuffle_files
    features = self.info.features
    rng = np.random.default_rng(0)
    examples = [features.encode_example(_fake_value(features, rng, i)) for i in range(NUM_FAKE)]
    signature = tf.nest.map_structure(
        lambda info: tf.TensorSpec(info.shape, info.dtype), features.get_serialized_info()
    )
    dataset = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(NUM_FAKE))
    return dataset.map(functools.partial(features.decode_example, decoders=decoders))


@pytest.mark.parametrize("name", ["coco/2017", "voc/2007"])
def test_coco_and_voc_batches_on_mock_data(name, tmp_path: pathlib.Path):
    spec = registry.DATASETS[name]
    with tfds.testing.mock_data(
        policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=_fake_as_dataset
    ):
        (train,) = _batches_for(name, tmp_path, train=True, count=1)
        evaluation = _batches_for(name, tmp_path, train=False)
    assert train["image"].shape == (2, 64, 64, 3) and train["gt_boxes"].shape == (2, 10, 4)
    assert train["gt_labels"].dtype == np.int32 and train["gt_mask"].dtype == np.bool_
    labels = train["gt_labels"][train["gt_mask"]]
    assert np.all((labels >= 0) & (labels < spec.num_classes))
    assert len(evaluation) == 3  # ceil(5 / 2), the last batch padded.
    ids = np.concatenate([b["image_id"][b["valid"]] for b in evaluation])
    if spec.has_image_id:
        assert sorted(ids.tolist()) == list(range(1, NUM_FAKE + 1))
    else:  # VOC ids come from the digits of the file name.
        assert sorted(ids.tolist()) == list(range(2000, 2000 + NUM_FAKE))
    for batch in evaluation:
        scale = batch["scale"][batch["valid"]]
        orig = batch["orig_size"][batch["valid"]]
        # The longer side fits 64 exactly; the aspect ratio is kept.
        resized = np.round(orig[:, ::-1] * scale)
        np.testing.assert_array_equal(resized.max(1), 64)
        np.testing.assert_allclose(scale[:, 0], scale[:, 1], rtol=0.05)


def _batches_for(name: str, data_dir: pathlib.Path, *, train: bool, count: int | None = None):
    dataset = pipeline.make_dataset(
        name, data_dir=str(data_dir), image_size=64, max_gt=10, batch_size=2, train=train
    )
    if count is not None:
        dataset = dataset.take(count)
    return list(tfds.as_numpy(dataset))
