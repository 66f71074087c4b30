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
  8-64 px log-uniform; half the objects are under 16 px (two P3 strides), so OTA's
  centre-square candidates leave most gts about one candidate.
* ``coco_like``: 384x384 (``ota-study`` trains it with P3-P7), 1-14 objects whose
  side is log-normal (median 36 px, log-std 2, in 6-345 px). COCO's small/medium/large
  (area < 32^2, < 96^2 in images of long side ~640) are taken relative to the image:
  ``sqrt(area) / 640 < 0.05, < 0.15``, here ``sqrt(area) / 384``, i.e. 19.2 and
  57.6 px; over 200 scenes the shares are about 40/35/26 % against COCO's 41/34/24 %
  (``COCO_SIZE_SHARES``). Relative to the strides the objects are 384/800 of COCO's
  at its 800-pixel training scale with the same P3 stride.
* ``crowd``: 256x256, 20-50 tall ellipses (width/height 0.35-0.7) of two classes,
  80% of them centred next to an earlier one, shapes may be 70% hidden: about 35
  objects per image, mean max-IoU between an object's box and another's about 0.23,
  in the spirit of CrowdHuman.
* ``crowded`` (15-40 objects up to 32 px in 128x128) and ``tiny`` (64x64, tests).

``docs/ota_shapes_sizes.png`` (``docs/make_ota_shapes_sizes.py``, through
``object_size_histogram``) shows each variant's object sizes beside COCO's.

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
    "COCO_SIZE_SHARES",
    "OtaShapes",
    "OtaShapesConfig",
    "Scene",
    "example_rng",
    "object_size_histogram",
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
# native images (long side 640): "approximately 41% of objects are small, 34% are
# medium, and 24% are large", https://cocodataset.org/#detection-eval. Relative to
# the long side the limits are sqrt(area) < 0.05 and < 0.15.
COCO_SIZE_SHARES = {"small": 0.41, "medium": 0.34, "large": 0.24}
COCO_RELATIVE_LIMITS = (32 / 640, 96 / 640)

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
    for _ in range(8 * target):
        if len(labels) == target:
            break
        if config.class_subset:
            label = config.class_subset[int(rng.integers(len(config.class_subset)))]
            colour_index, kind_index = divmod(label, len(SHAPE_KINDS))
        else:
            kind_index = int(rng.integers(len(SHAPE_KINDS)))
            colour_index = int(rng.integers(len(COLOURS)))
        extent = _draw_extent(rng, config, log_min, log_max)
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
                "2000/200 images of 384x384, 1-14 objects each; COCO's small/medium/large "
                "shares relative to the image size."
            ),
            image_size=384,
            max_objects=14,
            min_object_size=6,
            max_object_size=345,
            min_visible_fraction=0.5,
            object_size_distribution="lognormal",
            object_size_median=36.0,
            object_size_log_std=2.0,
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


def size_shares(sizes: np.ndarray, image_size: int) -> dict[str, float]:
    """Shares of COCO's small/medium/large, with COCO's limits scaled to the image:
    ``sqrt(area) / image_size`` below 0.05, below 0.15, and above (see ``COCO_SIZE_SHARES``)."""
    relative = np.asarray(sizes, np.float64) / image_size
    small, large = COCO_RELATIVE_LIMITS
    return {
        "small": float(np.mean(relative < small)),
        "medium": float(np.mean((relative >= small) & (relative < large))),
        "large": float(np.mean(relative >= large)),
    }


def _coco_lognormal() -> tuple[float, float]:
    """``(mu, sigma)`` of the log-normal ``sqrt(area) / long side`` that has COCO's
    published shares (a reference curve drawn from three numbers, not COCO's data)."""
    from statistics import NormalDist

    small, large = COCO_RELATIVE_LIMITS
    z_small = NormalDist().inv_cdf(COCO_SIZE_SHARES["small"])
    z_large = NormalDist().inv_cdf(1 - COCO_SIZE_SHARES["large"])
    sigma = (np.log(large) - np.log(small)) / (z_large - z_small)
    return float(np.log(small) - z_small * sigma), float(sigma)


def object_size_histogram(
    configs: list[OtaShapesConfig], path: str, *, num_images: int = 200
) -> dict[str, dict[str, float]]:
    """Draws each config's object-size histogram beside COCO's, saved at ``path`` (PNG).

    One row per config: ``sqrt(visible area)`` in pixels (with the study's size
    buckets), and relative to the image size with COCO's small/medium/large limits,
    the log-normal that has COCO's published shares and both sets of shares.
    ``docs/ota_shapes_sizes.png`` is made by ``docs/make_ota_shapes_sizes.py``.

    Returns:
      ``{config name: size_shares}``.
    """
    from matplotlib.figure import Figure

    mu, sigma = _coco_lognormal()
    figure = Figure(figsize=(10, 2.8 * len(configs)), layout="constrained")
    axes = figure.subplots(len(configs), 2, squeeze=False)
    shares = {}
    for (ax_px, ax_rel), config in zip(axes, configs, strict=True):
        sizes = object_sizes(config, num_images=num_images)
        shares[config.name] = size_shares(sizes, config.image_size)
        bins = np.geomspace(2, config.image_size, 40)
        ax_px.hist(sizes, bins=bins, color="#8fb3d9")
        for edge in (12, 16, 24, 32):
            ax_px.axvline(edge, color="#888888", lw=0.8, ls=":")
        ax_px.set_xscale("log")
        ax_px.set_xlabel("sqrt(area), pixels (dotted: 12, 16, 24, 32)")
        ax_px.set_ylabel("objects")
        ax_px.set_title(
            f"ota_shapes/{config.name}: {config.image_size} px, {len(sizes)} objects "
            f"in {num_images} images",
            fontsize=9,
        )
        relative_bins = np.geomspace(2 / 640, 1.0, 40)
        ax_rel.hist(
            sizes / config.image_size,
            bins=relative_bins,
            density=True,
            color="#8fb3d9",
            label=f"ota_shapes/{config.name}",
        )
        x = np.geomspace(relative_bins[0], 1.0, 200)
        pdf = np.exp(-((np.log(x) - mu) ** 2) / (2 * sigma**2)) / (x * sigma * np.sqrt(2 * np.pi))
        ax_rel.plot(x, pdf, color="#c0392b", label="COCO (log-normal with its S/M/L shares)")
        for limit in COCO_RELATIVE_LIMITS:
            ax_rel.axvline(limit, color="#c0392b", lw=0.8, ls="--")
        ours = shares[config.name]
        text = "S/M/L here {:.0%}/{:.0%}/{:.0%}\nCOCO {:.0%}/{:.0%}/{:.0%}".format(
            *ours.values(), *COCO_SIZE_SHARES.values()
        )
        ax_rel.text(0.98, 0.95, text, transform=ax_rel.transAxes, ha="right", va="top", fontsize=8)
        ax_rel.set_xscale("log")
        ax_rel.set_xlabel("sqrt(area) / image size (COCO: / 640, its long side)")
        ax_rel.set_ylabel("density")
        ax_rel.legend(loc="upper left", fontsize=7)
    figure.savefig(path, dpi=110)
    return shares
