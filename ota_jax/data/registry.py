"""The datasets the pipelines know: TFDS name, classes, splits, field names.

One table, ``DATASETS``. Labels inside the library are contiguous ``0..C-1``;
``category_ids[label]`` is the id COCO evaluation reports (COCO's own sparse
ids for COCO, ``1..C`` otherwise).
"""

from __future__ import annotations

import dataclasses
import logging

import tensorflow_datasets as tfds

from ota_jax.data import shapes  # Registers the ``ota_shapes`` builder with TFDS.

__all__ = [
    "DATASETS",
    "DatasetNotPreparedError",
    "DatasetSpec",
    "load_builder",
    "resolve",
]


class DatasetNotPreparedError(RuntimeError):
    """The TFDS data for a dataset is not in ``data_dir``; the message says how to get it."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the pipeline needs to know about one TFDS detection dataset.

    Attributes:
      tfds_name: name for ``tfds.builder`` (``name/config``).
      class_names: ``[C]`` names of the contiguous labels.
      category_ids: ``[C]`` evaluation category id of each label.
      train_split: default training split.
      eval_split: default evaluation split.
      ignore_key: ``objects`` field (bool) marking boxes that are not trained on
        and count as crowd regions in COCO evaluation (COCO ``is_crowd``, VOC
        ``is_difficult``).
      area_key: ``objects`` field with the instance area in original pixels, or
        None to use the box area.
      has_image_id: whether examples have ``image/id``; otherwise the id is
        derived from ``image/filename``.
      prepare_hint: how to put the data into ``data_dir``.
      auto_prepare: generate the data on first use (local, cheap datasets only).
    """

    tfds_name: str
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    train_split: str
    eval_split: str
    ignore_key: str
    area_key: str | None
    has_image_id: bool
    prepare_hint: str
    auto_prepare: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
# TFDS's COCO ClassLabel follows the annotation file's category order, which is
# by increasing id; the 80 used ids lie in 1..90 with gaps.
_COCO_UNUSED_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in _COCO_UNUSED_IDS)

VOC_CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

_COCO_HINT = (
    "Run `tfds build coco/2017 --data_dir={data_dir}` on a machine with internet access "
    "(about 25 GB of downloads), or put the COCO 2017 zips (train2017.zip, val2017.zip, "
    "test2017.zip, annotations_trainval2017.zip, image_info_test2017.zip) in a folder and run "
    "`tfds build coco/2017 --data_dir={data_dir} --manual_dir=FOLDER`."
)
_VOC_HINT = (
    "Run `tfds build {tfds_name} --data_dir={data_dir}` on a machine with internet access, or "
    "put the VOC tar files in a folder and run "
    "`tfds build {tfds_name} --data_dir={data_dir} --manual_dir=FOLDER`."
)

DATASETS: dict[str, DatasetSpec] = {
    "ota_shapes": DatasetSpec(
        tfds_name="ota_shapes",
        class_names=shapes.CLASS_NAMES,
        category_ids=tuple(range(1, len(shapes.CLASS_NAMES) + 1)),
        train_split="train",
        eval_split="validation",
        ignore_key="is_crowd",
        area_key="area",
        has_image_id=True,
        prepare_hint="It is generated locally: call `tfds.builder(...).download_and_prepare()`.",
        auto_prepare=True,
    ),
    "coco/2017": DatasetSpec(
        tfds_name="coco/2017",
        class_names=COCO_CLASS_NAMES,
        category_ids=COCO_CATEGORY_IDS,
        train_split="train",
        eval_split="validation",
        ignore_key="is_crowd",
        area_key="area",
        has_image_id=True,
        prepare_hint=_COCO_HINT,
    ),
    "voc/2007": DatasetSpec(
        tfds_name="voc/2007",
        class_names=VOC_CLASS_NAMES,
        category_ids=tuple(range(1, len(VOC_CLASS_NAMES) + 1)),
        train_split="train+validation",
        eval_split="test",
        ignore_key="is_difficult",
        area_key=None,
        has_image_id=False,
        prepare_hint=_VOC_HINT,
    ),
    "voc/2012": DatasetSpec(
        tfds_name="voc/2012",
        class_names=VOC_CLASS_NAMES,
        category_ids=tuple(range(1, len(VOC_CLASS_NAMES) + 1)),
        # VOC 2012's test split has no public annotations.
        train_split="train",
        eval_split="validation",
        ignore_key="is_difficult",
        area_key=None,
        has_image_id=False,
        prepare_hint=_VOC_HINT,
    ),
}


def resolve(name: str) -> tuple[DatasetSpec, str]:
    """The table entry and TFDS name for ``name``.

    ``name`` is a key of ``DATASETS`` or, for the synthetic set, ``ota_shapes/<config>``
    (``ota_shapes/coco_like``, ``ota_shapes/crowd``, ``ota_shapes/tiny_objects``, ...).
    """
    if name in DATASETS:
        return DATASETS[name], DATASETS[name].tfds_name
    base, _, config = name.partition("/")
    if base == "ota_shapes":
        known = [c.name for c in shapes.OtaShapes.BUILDER_CONFIGS]
        if config not in known:
            raise ValueError(
                f"Unknown ota_shapes config {name!r}; known: {['ota_shapes/' + k for k in known]}"
            )
        return DATASETS[base], name
    raise ValueError(
        f"Unknown dataset {name!r}; known: {sorted(DATASETS)} and ota_shapes/<config>."
    )


def load_builder(name: str, *, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The TFDS builder of ``name``, generating the data first if it is local and missing.

    COCO and VOC are never downloaded here: ``pipeline.make_dataset`` raises
    ``DatasetNotPreparedError`` when their data is missing.
    """
    spec, tfds_name = resolve(name)
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if spec.auto_prepare and not builder.is_prepared():
        where = data_dir or "~/tensorflow_datasets"
        logging.getLogger(__name__).info("Generating dataset %s in %s.", tfds_name, where)
        # Statistics would read every example back for nothing we use.
        stats = tfds.download.ComputeStatsMode.SKIP
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(compute_stats=stats)
        )
    return builder


def not_prepared_error(name: str, data_dir: str | None) -> DatasetNotPreparedError:
    """The error raised when ``name`` has no data in ``data_dir``."""
    spec, tfds_name = resolve(name)
    where = data_dir or "~/tensorflow_datasets"
    hint = spec.prepare_hint.format(data_dir=where, tfds_name=tfds_name)
    return DatasetNotPreparedError(f"Dataset {tfds_name!r} is not prepared in {where}. {hint}")
