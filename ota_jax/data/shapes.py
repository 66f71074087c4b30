"""``ota_shapes``: a synthetic detection dataset generated locally, no download.

Each image is a textured, noisy background with filled rectangles, ellipses and
triangles painted on it back to front. A class is a shape kind and a colour
(``CLASS_NAMES``), so a detector has to look at both. Objects range from
``min_object_size`` pixels to half the image, overlap, and in the ``crowded``
config pile up by the dozen, which is where OTA's global assignment matters.

Boxes are the tight boxes of each object's *visible* pixels (like COCO, whose
boxes enclose the visible segmentation), clipped to the image. A new shape that
would hide more than ``1 - min_visible_fraction`` of an earlier one is rejected
and another is drawn, so every painted shape is labelled and none is mostly
hidden. Everything is a pure function of ``(config.seed, split, index)``.

Usage::

    import tensorflow_datasets as tfds
    import ota_jax.data.shapes  # registers the builder

    builder = tfds.builder("ota_shapes/tiny", data_dir="/tmp/tfds")
    builder.download_and_prepare()
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

__all__ = [
    "CLASS_NAMES",
    "OtaShapes",
    "OtaShapesConfig",
    "Scene",
    "example_rng",
    "render_example",
    "render_scene",
]

SHAPE_KINDS = ("rectangle", "ellipse", "triangle")
COLOURS = {
    "red": (205.0, 45.0, 40.0),
    "blue": (40.0, 80.0, 215.0),
}
# Class index = colour index * len(SHAPE_KINDS) + kind index.
CLASS_NAMES = tuple(f"{colour}_{kind}" for colour in COLOURS for kind in SHAPE_KINDS)

# image/id offsets keep ids unique across splits (handy when debugging eval).
_SPLIT_CODES = {"train": 0, "validation": 1}
_SPLIT_ID_OFFSET = 1_000_000
# Shapes whose visible part is smaller than this many pixels are not kept.
_MIN_VISIBLE_PIXELS = 12


@dataclasses.dataclass(eq=False)
class OtaShapesConfig(tfds.core.BuilderConfig):
    """How many images of what kind; the config name is part of the data path.

    Changing a field of a named config changes the data: bump ``version`` (or
    use a new name) so that stale prepared data is not reused.
    """

    image_size: int = 128
    num_train: int = 2000
    num_validation: int = 200
    min_objects: int = 1
    max_objects: int = 8
    min_object_size: int = 8
    max_object_size: int = 64
    min_visible_fraction: float = 0.6
    seed: int = 0


class Scene(NamedTuple):
    """One rendered image and its objects (numpy, original pixels).

    Attributes:
      image: ``[S, S, 3]`` uint8 RGB.
      instance_map: ``[S, S]`` int32, the index of the object owning each pixel,
        -1 for background.
      boxes: ``[N, 4]`` int64 xyxy pixel edges of the visible pixels
        (``x2``/``y2`` exclusive, so width = ``x2 - x1``).
      labels: ``[N]`` int64 class indices into ``CLASS_NAMES``.
      areas: ``[N]`` int64 visible pixel counts.
    """

    image: np.ndarray
    instance_map: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    areas: np.ndarray


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator every random choice of one example comes from."""
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``[S, S, 3]`` float32 low-saturation texture: base colour plus waves."""
    base = rng.uniform(70.0, 170.0) + rng.uniform(-12.0, 12.0, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    texture = np.zeros((size, size), np.float32)
    for _ in range(3):
        angle = rng.uniform(0.0, np.pi)
        frequency = rng.uniform(1.0, 8.0)
        phase = rng.uniform(0.0, 2 * np.pi)
        wave = np.sin(2 * np.pi * frequency * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
        texture += rng.uniform(5.0, 15.0) * wave
    # The same texture on all channels keeps the background grey-ish, so colour
    # alone separates it from the red and blue shapes.
    return base[None, None, :].astype(np.float32) + texture[:, :, None]


def _local_mask(rng: np.random.Generator, kind: str, height: int, width: int) -> np.ndarray:
    """``[h, w]`` bool mask of a shape filling an ``h x w`` box, sampled at pixel centres."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    if kind == "rectangle":
        return np.ones((height, width), bool)
    if kind == "ellipse":
        ry, rx = height / 2, width / 2
        return ((xx - rx) / rx) ** 2 + ((yy - ry) / ry) ** 2 <= 1.0
    # Triangle: the apex on one side of the box, the base on the opposite side.
    apex = rng.uniform(0.0, 1.0)
    base_start, base_end = rng.uniform(0.0, 0.3), rng.uniform(0.7, 1.0)
    if rng.random() < 0.5:  # Apex on the top edge, base on the bottom edge.
        vertices = np.array(
            [[apex * width, 0.0], [base_start * width, height], [base_end * width, height]]
        )
    else:  # Apex on the left edge, base on the right edge.
        vertices = np.array(
            [[0.0, apex * height], [width, base_start * height], [width, base_end * height]]
        )
    if rng.random() < 0.5:  # Mirror: the apex on the bottom or right edge.
        vertices = np.array([width, height]) - vertices
    # Inside = on the same side of all three edges (either winding order).
    sides = [
        (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0)
        for (x0, y0), (x1, y1) in zip(vertices, np.roll(vertices, -1, axis=0), strict=True)
    ]
    inside_ccw = (sides[0] >= 0) & (sides[1] >= 0) & (sides[2] >= 0)
    inside_cw = (sides[0] <= 0) & (sides[1] <= 0) & (sides[2] <= 0)
    return inside_ccw | inside_cw


def render_scene(rng: np.random.Generator, config: OtaShapesConfig) -> Scene:
    """Draws one image and its objects from ``rng``.

    Args:
      rng: the example's generator (see ``example_rng``).
      config: sizes and counts.

    Returns:
      A ``Scene``; objects in painting order (back to front).
    """
    size = config.image_size
    canvas = _background(rng, size)
    instance_map = np.full((size, size), -1, np.int32)
    full_areas: list[int] = []
    labels: list[int] = []
    target = int(rng.integers(config.min_objects, config.max_objects + 1))
    log_min, log_max = np.log(config.min_object_size), np.log(config.max_object_size)
    for _ in range(8 * target):
        if len(labels) == target:
            break
        kind_index = int(rng.integers(len(SHAPE_KINDS)))
        colour_index = int(rng.integers(len(COLOURS)))
        extent = np.exp(rng.uniform(log_min, log_max))
        aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
        height = int(np.clip(round(extent / np.sqrt(aspect)), 4, size))
        width = int(np.clip(round(extent * np.sqrt(aspect)), 4, size))
        # Up to a quarter of a shape may hang off the image; its box is clipped.
        y0 = int(rng.integers(-(height // 4), size - height + height // 4 + 1))
        x0 = int(rng.integers(-(width // 4), size - width + width // 4 + 1))
        local = _local_mask(rng, SHAPE_KINDS[kind_index], height, width)
        colour = np.asarray(list(COLOURS.values())[colour_index]) * rng.uniform(0.8, 1.1)

        mask = np.zeros((size, size), bool)
        top, left = max(y0, 0), max(x0, 0)
        bottom, right = min(y0 + height, size), min(x0 + width, size)
        mask[top:bottom, left:right] = local[top - y0 : bottom - y0, left - x0 : right - x0]
        full_area = int(local.sum())
        new_index = len(labels)
        candidate = np.where(mask, new_index, instance_map)
        visible = np.bincount(candidate.ravel() + 1, minlength=new_index + 2)[1:]
        needed = np.asarray([*full_areas, full_area]) * config.min_visible_fraction
        if np.any(visible < needed) or np.any(visible < _MIN_VISIBLE_PIXELS):
            continue  # Would hide an earlier shape, or is itself mostly off-image.
        instance_map = candidate
        canvas[mask] = colour
        full_areas.append(full_area)
        labels.append(colour_index * len(SHAPE_KINDS) + kind_index)

    canvas += rng.normal(0.0, 6.0, size=canvas.shape)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    boxes = np.zeros((len(labels), 4), np.int64)
    areas = np.zeros(len(labels), np.int64)
    for index in range(len(labels)):
        rows, cols = np.nonzero(instance_map == index)
        boxes[index] = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        areas[index] = rows.size
    return Scene(image, instance_map, boxes, np.asarray(labels, np.int64), areas)


def render_example(config: OtaShapesConfig, split: str, index: int) -> Scene:
    """The scene stored as example ``index`` of ``split`` (regenerated exactly)."""
    return render_scene(example_rng(config.seed, split, index), config)


def image_id(split: str, index: int) -> int:
    """``image/id`` of example ``index`` of ``split``; unique across splits, >= 1."""
    return _SPLIT_CODES[split] * _SPLIT_ID_OFFSET + index + 1


def _to_tfds_example(scene: Scene, example_id: int) -> dict:
    size = scene.image.shape[0]
    x1, y1, x2, y2 = (scene.boxes.T / size).astype(np.float32)
    return {
        "image": scene.image,
        "image/id": example_id,
        "objects": {
            "bbox": np.stack([y1, x1, y2, x2], axis=-1).reshape(-1, 4),
            "label": scene.labels,
            "area": scene.areas,
            "is_crowd": np.zeros(len(scene.labels), bool),
        },
    }


class OtaShapes(tfds.core.GeneratorBasedBuilder):
    """Synthetic coloured shapes for object detection, generated locally."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: ClassVar[list[OtaShapesConfig]] = [
        OtaShapesConfig(name="default", description="2000/200 images, 1-8 objects each."),
        OtaShapesConfig(
            name="crowded",
            description="2000/200 images, 15-40 mostly small objects each.",
            min_objects=15,
            max_objects=40,
            max_object_size=32,
            min_visible_fraction=0.5,
        ),
        OtaShapesConfig(
            name="tiny",
            description="16/8 images of 64x64 pixels, for tests.",
            image_size=64,
            num_train=16,
            num_validation=8,
            max_objects=6,
            max_object_size=32,
        ),
    ]

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS would find this file through importlib.resources on the top-level
        # package, which fails for some installs (an editable install of a
        # namespace package); the file is right here.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        # DatasetInfo directly: ``dataset_info_from_configs`` looks for metadata
        # files (README, checksums) in the package, which this builder has none of.
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
                    "image/id": np.int64,
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                            "area": np.int64,
                            "is_crowd": np.bool_,
                        }
                    ),
                }
            ),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Nothing to download.
        config = self.builder_config
        return {
            "train": self._generate_examples("train", config.num_train),
            "validation": self._generate_examples("validation", config.num_validation),
        }

    def _generate_examples(self, split: str, num_examples: int):
        for index in range(num_examples):
            scene = render_example(self.builder_config, split, index)
            yield index, _to_tfds_example(scene, image_id(split, index))
