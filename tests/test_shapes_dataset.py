"""The synthetic ``ota_shapes`` TFDS dataset: prepared locally, deterministic, tight boxes."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import pathlib
from statistics import NormalDist

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from ota_jax.data import registry, shapes  # noqa: E402

TINY = "ota_shapes/tiny"


def _tiny_config() -> shapes.OtaShapesConfig:
    return next(c for c in shapes.OtaShapes.BUILDER_CONFIGS if c.name == "tiny")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("tfds")
    registry.load_builder(TINY, data_dir=str(path))
    return path


@pytest.fixture(scope="module")
def validation(data_dir) -> list[dict]:
    builder = tfds.builder(TINY, data_dir=str(data_dir))
    return list(tfds.as_numpy(builder.as_dataset(split="validation")))


def test_prepares_locally_with_expected_splits_and_features(data_dir):
    builder = tfds.builder(TINY, data_dir=str(data_dir))
    config = _tiny_config()
    assert builder.is_prepared()
    assert builder.info.splits["train"].num_examples == config.num_train
    assert builder.info.splits["validation"].num_examples == config.num_validation
    assert builder.info.features["objects"]["label"].names == list(shapes.CLASS_NAMES)

    ids = set()
    for split in ("train", "validation"):
        for example in tfds.as_numpy(builder.as_dataset(split=split)):
            ids.add(int(example["image/id"]))
            assert example["image"].shape == (config.image_size, config.image_size, 3)
            assert example["image"].dtype == np.uint8
            objects = example["objects"]
            assert 1 <= len(objects["label"]) <= config.max_objects
            assert np.all((objects["label"] >= 0) & (objects["label"] < len(shapes.CLASS_NAMES)))
            ymin, xmin, ymax, xmax = objects["bbox"].T
            assert np.all((0 <= ymin) & (ymin < ymax) & (ymax <= 1))
            assert np.all((0 <= xmin) & (xmin < xmax) & (xmax <= 1))
            assert np.all(objects["area"] > 0)
            assert not objects["is_crowd"].any()
    assert len(ids) == config.num_train + config.num_validation  # Unique across splits.


def test_same_seed_same_bytes(data_dir, tmp_path):
    registry.load_builder(TINY, data_dir=str(tmp_path))
    first = sorted((data_dir / "ota_shapes/tiny/1.0.0").glob("*.tfrecord*"))
    second = sorted((tmp_path / "ota_shapes/tiny/1.0.0").glob("*.tfrecord*"))
    assert [p.name for p in first] == [p.name for p in second] and first
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_seed_changes_images():
    config = _tiny_config()
    other = dataclasses.replace(config, seed=config.seed + 1)
    same = shapes.render_example(config, "train", 3)
    again = shapes.render_example(config, "train", 3)
    different = shapes.render_example(other, "train", 3)
    np.testing.assert_array_equal(same.image, again.image)
    np.testing.assert_array_equal(same.boxes, again.boxes)
    assert not np.array_equal(same.image, different.image)


def test_boxes_are_tight_around_the_drawn_pixels(validation):
    config = _tiny_config()
    size = config.image_size
    red = {i for i, name in enumerate(shapes.CLASS_NAMES) if name.startswith("red")}
    for example in validation:
        index = int(example["image/id"]) - shapes.image_id("validation", 0)
        scene = shapes.render_example(config, "validation", index)
        image = example["image"].astype(np.int32)
        np.testing.assert_array_equal(example["image"], scene.image)

        # Colour alone (no renderer state) finds the painted pixels: the
        # background is grey-ish, shapes are strongly red or blue.
        is_red = image[..., 0] - image[..., 2] > 80
        is_blue = image[..., 2] - image[..., 0] > 80
        labels = example["objects"]["label"]
        red_objects = np.isin(scene.instance_map, [k for k, c in enumerate(labels) if c in red])
        blue_objects = np.isin(
            scene.instance_map, [k for k, c in enumerate(labels) if c not in red]
        )
        np.testing.assert_array_equal(is_red, red_objects)
        np.testing.assert_array_equal(is_blue, blue_objects)

        boxes = np.round(example["objects"]["bbox"] * size).astype(int)  # yxyx, end exclusive
        for k, (y1, x1, y2, x2) in enumerate(boxes):
            pixels = scene.instance_map == k
            assert pixels.sum() == example["objects"]["area"][k]
            colour = is_red if labels[k] in red else is_blue
            assert colour[pixels].all()
            inside = np.zeros_like(pixels)
            inside[y1:y2, x1:x2] = True
            assert not (pixels & ~inside).any()  # Nothing drawn outside the box ...
            # ... and every edge of the box touches the object: the box is tight.
            assert pixels[y1].any() and pixels[y2 - 1].any()
            assert pixels[:, x1].any() and pixels[:, x2 - 1].any()


def test_crowded_config_has_many_objects():
    config = next(c for c in shapes.OtaShapes.BUILDER_CONFIGS if c.name == "crowded")
    counts = [len(shapes.render_example(config, "train", i).labels) for i in range(5)]
    assert np.mean(counts) >= 15
    scene = shapes.render_example(config, "train", 0)
    # Areas are visible pixel counts, and no object is reduced to a sliver.
    visible = np.bincount(scene.instance_map.ravel() + 1)[1:]
    np.testing.assert_array_equal(visible, scene.areas)
    assert np.all(scene.areas >= 12)


def _config(name: str) -> shapes.OtaShapesConfig:
    return shapes.OtaShapes.builder_configs[name]


@functools.cache
def _sizes(name: str) -> np.ndarray:
    """The object sizes of a variant's first 100 training images (rendered once)."""
    return shapes.object_sizes(_config(name), num_images=100)


def _max_iou(boxes: np.ndarray) -> np.ndarray:
    """``[N]`` each box's largest IoU with another box of the image."""
    b = boxes.astype(np.float64)
    top_left = np.maximum(b[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    iou = inter / (area[:, None] + area[None, :] - inter)
    np.fill_diagonal(iou, 0.0)
    return iou.max(axis=1)


@pytest.mark.parametrize("name", ["tiny_objects", "coco_like", "crowd"])
def test_variants_are_deterministic_per_example(name):
    config = _config(name)
    first = shapes.render_example(config, "validation", 2)
    again = shapes.render_example(config, "validation", 2)
    other = shapes.render_example(config, "validation", 3)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.boxes, again.boxes)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert not np.array_equal(first.image, other.image)
    assert first.image.shape == (config.image_size, config.image_size, 3)


def test_default_is_tiny_objects_with_the_same_data():
    default, tiny_objects = _config("default"), _config("tiny_objects")
    a = shapes.render_example(default, "train", 7)
    b = shapes.render_example(tiny_objects, "train", 7)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)


def test_coco_like_has_cocos_size_shares_relative_to_the_strides():
    shares = shapes.size_shares(_sizes("coco_like"))
    for bucket, target in shapes.COCO_SIZE_SHARES.items():
        assert abs(shares[bucket] - target) < 0.04, (bucket, shares)


def test_size_shares_counts_each_size_once_at_cocos_limits():
    small, large = shapes.COCO_STRIDE_LIMITS
    assert (small, large) == pytest.approx((32 * 800 / 480, 96 * 800 / 480))
    sizes = np.array([1.0, small - 1e-9, small, large - 1e-9, large, 1e4])
    assert shapes.size_shares(sizes) == {"small": 2 / 6, "medium": 2 / 6, "large": 2 / 6}


def test_largest_first_paints_large_objects_at_the_back():
    config = _config("coco_like")
    for index in range(6):
        scene = shapes.render_example(config, "train", index)
        box_areas = np.prod(scene.boxes[:, 2:] - scene.boxes[:, :2], axis=1)
        # Painting order is back to front; the first object is the largest drawn, and
        # however the later ones cover it, its box keeps most of its size.
        assert box_areas[0] >= 0.5 * box_areas.max(), index


def test_crowd_is_crowded_overlapping_and_has_two_classes():
    config = _config("crowd")
    scenes = [shapes.render_example(config, "train", i) for i in range(12)]
    assert np.mean([len(s.labels) for s in scenes]) >= 25
    assert np.mean(np.concatenate([_max_iou(s.boxes) for s in scenes])) >= 0.18
    assert sum(int((_max_iou(s.boxes) > 0.5).sum()) for s in scenes) >= 6
    assert set(np.concatenate([s.labels for s in scenes]).tolist()) == set(config.class_subset)


def test_tiny_objects_are_small_for_the_strides():
    sizes = _sizes("tiny_objects")
    assert np.mean(sizes < 16) > 0.5  # Half the objects span under two P3 strides.
    assert np.mean(sizes < 12) > 0.3
    assert np.median(sizes) < np.median(_sizes("coco_like"))


def test_object_size_histogram_draws_every_variant(tmp_path):
    pytest.importorskip("matplotlib")
    path = pathlib.Path(__file__).resolve().parents[1] / "docs" / "make_ota_shapes_sizes.py"
    spec = importlib.util.spec_from_file_location("make_ota_shapes_sizes", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    configs = [_config("tiny"), _config("crowd")]
    shares = script.object_size_histogram(configs, str(tmp_path / "sizes.png"), num_images=4)
    assert set(shares) == {"tiny", "crowd"}
    for config in configs:  # the shares it prints are those of the sizes it draws
        sizes = shapes.object_sizes(config, num_images=4)
        assert shares[config.name] == shapes.size_shares(sizes)
    assert (tmp_path / "sizes.png").stat().st_size > 1000
    # The reference curve has COCO's shares at COCO's limits.
    mu, sigma = script.coco_lognormal()
    below = [NormalDist(mu, sigma).cdf(np.log(limit)) for limit in shapes.COCO_STRIDE_LIMITS]
    assert below == pytest.approx(
        [shapes.COCO_SIZE_SHARES["small"], 1 - shapes.COCO_SIZE_SHARES["large"]]
    )
