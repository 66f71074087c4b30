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

Configs (issue 24: OTA's claims are about crowded scenes and objects of every size):

* ``tiny_objects`` (alias ``default``, the same data): 128x128, 1-8 objects of
  8-64 px log-uniform; half the objects are under 16 px (two P3 strides) and a third
  under 12 px, so OTA's centre-square candidates leave many gts about one candidate.
* ``coco_like``: 384x384 with P3-P7 (``ota-study``), 1-11 objects whose side is
  log-normal (median 100 px, log-std 1.7), largest painted first. COCO's
  small/medium/large are taken *relative to the strides*: FCOS and OTA train COCO at
  about 800/480 of its native size with a P3 stride of 8 px, as ours, so COCO's
  ``sqrt(area)`` limits 32 and 96 become 53.3 and 160 px (``COCO_STRIDE_LIMITS``).
  Over 200 scenes the shares are about 42/37/21 % against COCO's 41/34/24 %
  (``COCO_SIZE_SHARES``); large objects are bounded by the 384-px image.
* ``crowd``: 256x256, 20-50 tall ellipses (width/height 0.35-0.7) of two classes,
  80% of them centred next to an earlier one, shapes may be 70% hidden: about 35
  objects per image, mean max-IoU between an object's box and another's about 0.23,
  in the spirit of CrowdHuman.
* ``crowded`` (15-40 objects up to 32 px in 128x128) and ``tiny`` (64x64, tests).

``docs/ota_shapes_sizes.png`` (``docs/make_ota_shapes_sizes.py``) shows each
variant's object sizes beside COCO's.

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
    "COCO_SIZE_LIMITS",
    "COCO_SIZE_SHARES",
    "COCO_STRIDE_LIMITS",
    "COCO_TRAINING_SCALE",
    "OtaShapes",
    "OtaShapesConfig",
    "Scene",
    "example_rng",
    "object_sizes",
    "render_example",
    "render_scene",
    "size_shares",
]

SHAPE_KINDS = ("rectangle", "ellipse", "triangle")
COLOURS = {
    "red": (205.0, 45.0, 40.0),
    "blue": (40.0, 80.0, 215.0),
}
# Class index = colour index * len(SHAPE_KINDS) + kind index.
CLASS_NAMES = tuple(f"{colour}_{kind}" for colour in COLOURS for kind in SHAPE_KINDS)

# COCO's share of small (area < 32^2), medium (< 96^2) and large instances, in its
# native images: "approximately 41% of objects are small, 34% are medium, and 24% are
# large", https://cocodataset.org/#detection-eval.
COCO_SIZE_SHARES = {"small": 0.41, "medium": 0.34, "large": 0.24}
COCO_SIZE_LIMITS = (32.0, 96.0)
# FCOS and OTA resize COCO's short side to 800; most COCO images are 640x480, so its
# objects grow by about 800/480 while the P3 stride stays 8 px, as in ota_shapes. The
# limits relative to the strides are therefore these many pixels of ota_shapes.
COCO_TRAINING_SCALE = 800 / 480
COCO_STRIDE_LIMITS = tuple(limit * COCO_TRAINING_SCALE for limit in COCO_SIZE_LIMITS)

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
    # Side length (sqrt of the box, before clipping and occlusion): "log_uniform" on
    # [min_object_size, max_object_size], or "lognormal" with median
    # ``object_size_median`` and log-std ``object_size_log_std``, redrawn until it lies
    # in that range.
    object_size_distribution: str = "log_uniform"
    object_size_median: float = 0.0
    object_size_log_std: float = 0.0
    # Width / height, log-uniform in this range.
    aspect_range: tuple[float, float] = (0.5, 2.0)
    # Class indices (into CLASS_NAMES) objects are drawn from; empty: all of them.
    class_subset: tuple[int, ...] = ()
    # Chance that an object is centred next to an earlier one (crowds, queues).
    cluster_probability: float = 0.0
    # Draw the image's object sizes first and paint the largest at the back, as large
    # things are in photos; otherwise a large object painted late would hide earlier
    # ones and be rejected, and large objects would be rare whatever the distribution.
    largest_first: bool = False


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


def _draw_extent(
    rng: np.random.Generator, config: OtaShapesConfig, log_min: float, log_max: float
) -> float:
    """One object's side length in pixels (see ``OtaShapesConfig.object_size_distribution``)."""
    if config.object_size_distribution == "log_uniform":
        return float(np.exp(rng.uniform(log_min, log_max)))
    if config.object_size_distribution != "lognormal":
        raise ValueError(f"unknown object_size_distribution {config.object_size_distribution!r}")
    log_median = np.log(config.object_size_median)
    for _ in range(100):
        log_extent = rng.normal(log_median, config.object_size_log_std)
        if log_min <= log_extent <= log_max:
            return float(np.exp(log_extent))
    return float(np.exp(np.clip(log_median, log_min, log_max)))


def _draw_corner(
    rng: np.random.Generator,
    config: OtaShapesConfig,
    height: int,
    width: int,
    instance_map: np.ndarray,
    num_objects: int,
) -> tuple[int, int]:
    """Top-left corner of a ``height x width`` shape; up to a quarter may hang off."""
    size = config.image_size
    low_y, high_y = -(height // 4), size - height + height // 4
    low_x, high_x = -(width // 4), size - width + width // 4
    if config.cluster_probability > 0 and num_objects and rng.random() < config.cluster_probability:
        # Next to an earlier object: centre within about one object size of its centre.
        rows, cols = np.nonzero(instance_map == int(rng.integers(num_objects)))
        if rows.size:
            centre_y = (rows.min() + rows.max()) / 2 + rng.normal(0.0, 0.35) * height
            centre_x = (cols.min() + cols.max()) / 2 + rng.normal(0.0, 0.35) * width
            return (
                int(np.clip(round(centre_y - height / 2), low_y, high_y)),
                int(np.clip(round(centre_x - width / 2), low_x, high_x)),
            )
    return int(rng.integers(low_y, high_y + 1)), int(rng.integers(low_x, high_x + 1))


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
    extents = []
    if config.largest_first:
        extents = sorted(_draw_extent(rng, config, log_min, log_max) for _ in range(target))
    for _ in range(8 * target):
        if len(labels) == target:
            break
        if config.class_subset:
            label = config.class_subset[int(rng.integers(len(config.class_subset)))]
            colour_index, kind_index = divmod(label, len(SHAPE_KINDS))
        else:
            kind_index = int(rng.integers(len(SHAPE_KINDS)))
            colour_index = int(rng.integers(len(COLOURS)))
        # A rejected object of a largest-first image is tried again elsewhere.
        extent = (
            extents[-1 - len(labels)] if extents else _draw_extent(rng, config, log_min, log_max)
        )
        aspect_low, aspect_high = config.aspect_range
        aspect = np.exp(rng.uniform(np.log(aspect_low), np.log(aspect_high)))
        height = int(np.clip(round(extent / np.sqrt(aspect)), 4, size))
        width = int(np.clip(round(extent * np.sqrt(aspect)), 4, size))
        y0, x0 = _draw_corner(rng, config, height, width, instance_map, len(labels))
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
        OtaShapesConfig(
            name="default",
            description="Alias of tiny_objects (the same data), kept for existing configs.",
        ),
        OtaShapesConfig(
            name="tiny_objects",
            description="2000/200 images of 128x128, 1-8 objects each, small for the strides.",
        ),
        OtaShapesConfig(
            name="coco_like",
            description=(
                "2000/200 images of 384x384, 1-11 objects each; COCO's small/medium/large "
                "shares relative to P3-P7 strides."
            ),
            # 1.1.0: sizes relative to the strides, not to the image (1.0.0).
            version="1.1.0",
            image_size=384,
            max_objects=11,
            min_object_size=6,
            max_object_size=1152,  # Sides beyond the image are clipped to it.
            min_visible_fraction=0.5,
            object_size_distribution="lognormal",
            object_size_median=100.0,
            object_size_log_std=1.7,
            largest_first=True,
        ),
        OtaShapesConfig(
            name="crowd",
            description=(
                "1000/200 images of 256x256, 20-50 tall ellipses of two classes each, "
                "clustered and heavily overlapping (in the spirit of CrowdHuman)."
            ),
            image_size=256,
            num_train=1000,
            min_objects=20,
            max_objects=50,
            min_object_size=16,
            max_object_size=80,
            min_visible_fraction=0.3,
            aspect_range=(0.35, 0.7),
            class_subset=(1, 4),  # red_ellipse, blue_ellipse
            cluster_probability=0.8,
        ),
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


def object_sizes(config: OtaShapesConfig, *, split: str = "train", num_images: int = 200):
    """``[N]`` float64 ``sqrt(visible area)`` in pixels of every object of the first
    ``num_images`` examples of ``split`` (rendered, no TFDS build)."""
    sizes = [np.sqrt(render_example(config, split, i).areas) for i in range(num_images)]
    return np.concatenate(sizes).astype(np.float64)


def size_shares(sizes: np.ndarray) -> dict[str, float]:
    """Shares of COCO's small/medium/large relative to the strides: ``sqrt(area)``
    pixels below and above ``COCO_STRIDE_LIMITS`` (see ``COCO_SIZE_SHARES``)."""
    sizes = np.asarray(sizes, np.float64)
    small, large = COCO_STRIDE_LIMITS
    return {
        "small": float(np.mean(sizes < small)),
        "medium": float(np.mean((sizes >= small) & (sizes < large))),
        "large": float(np.mean(sizes >= large)),
    }
