"""The arguments every assigner takes: named, checked, cleaned; and the result built
from a gt index per anchor."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ota_jax.assignment import Assignment
from ota_jax.boxes import pairwise_iou
from ota_jax.transport import Transport

__all__ = [
    "NONFINITE_COST",
    "AssignArgs",
    "AssignInputs",
    "background_assignment",
    "check_inputs",
    "finite_cost",
    "make_assignment",
    "prepare_inputs",
    "valid_gts",
    "vmap_images",
]

# Stands in for a non-finite cost (NaN or inf predictions): larger than any
# penalised pair, so such a pair is chosen only when nothing else is left.
NONFINITE_COST = 1e8


class AssignArgs(NamedTuple):
    """An assigner's arguments, one image or a batch (a leading ``[B]`` on every
    field except ``points`` and ``strides``, which all images share)."""

    pred_boxes: Array  # [A, 4] xyxy pixels
    cls_logits: Array  # [A, C]
    points: Array  # [A, 2]
    strides: Array  # [A]
    gt_boxes: Array  # [M, 4] xyxy pixels
    gt_labels: Array  # [M] int
    gt_mask: Array  # [M] bool
    obj_logits: Array | None = None  # [A]

    def image_axes(self) -> AssignArgs:
        """``jax.vmap``'s ``in_axes`` over the images of a batch."""
        return AssignArgs(0, 0, None, None, 0, 0, 0, 0)

    def with_gts(self, gt_boxes: Array, gt_labels: Array, gt_mask: Array) -> AssignArgs:
        """The same predictions with other gts."""
        return self._replace(gt_boxes=gt_boxes, gt_labels=gt_labels, gt_mask=gt_mask)


class AssignInputs(NamedTuple):
    """Checked and cleaned inputs of one image (see `prepare_inputs`)."""

    pred_boxes: Array  # [A, 4] float32, non-finite values replaced
    cls_logits: Array  # [A, C] float32
    obj_logits: Array | None  # [A] float32
    points: Array  # [A, 2] float32
    strides: Array  # [A] float32
    gt_boxes: Array  # [M, 4] float32, invalid rows zeroed
    gt_labels: Array  # [M] int32, clipped into [0, C)
    gt_mask: Array  # [M] bool, real and valid gts
    ious: Array  # [M, A] float32 IoU of each gt with each predicted box, finite


def _check_shapes(args: AssignArgs, batch: str = "") -> None:
    """Raises ValueError/TypeError naming the offending argument; runs at trace time.
    ``args`` are one image's; ``batch`` describes the batch they came from, if any."""
    num_anchors = args.points.shape[0] if args.points.ndim == 2 else None
    num_gt = args.gt_boxes.shape[0] if args.gt_boxes.ndim == 2 else None
    expected = {
        "points": (num_anchors, 2),
        "strides": (num_anchors,),
        "pred_boxes": (num_anchors, 4),
        "cls_logits": (num_anchors, None),
        "gt_boxes": (None, 4),
        "gt_labels": (num_gt,),
        "gt_mask": (num_gt,),
        "obj_logits": (num_anchors,),
    }
    lead = "[B, " if batch else "["
    for name, shape in expected.items():
        value = getattr(args, name)
        if value is None:
            continue
        if value.ndim != len(shape) or any(
            want is not None and have != want for have, want in zip(value.shape, shape, strict=True)
        ):
            pretty = ", ".join(
                "A" if d == num_anchors else "M" if d == num_gt else "*" if d is None else str(d)
                for d in shape
            )
            if name in ("points", "strides"):
                pretty = "[" + pretty  # shared by all images
            else:
                pretty = lead + pretty
            got = batch or f"{name} has shape {tuple(value.shape)}"
            raise ValueError(
                f"{name}: expected {pretty}] (A={num_anchors} anchor points, M={num_gt} gts); "
                f"got {got}"
                + ("" if batch else ". One image: use the *_batch function for a batch axis")
            )
    if args.cls_logits.shape[1] == 0:
        raise ValueError("cls_logits has no classes")
    for name in ("pred_boxes", "cls_logits", "points", "strides", "gt_boxes", "obj_logits"):
        value = getattr(args, name)
        if value is not None and not (
            jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
        ):
            raise TypeError(f"{name} must be real numbers, got dtype {value.dtype}")
    if not jnp.issubdtype(args.gt_labels.dtype, jnp.integer):
        raise TypeError(f"gt_labels must be integers, got {args.gt_labels.dtype}")
    if args.gt_mask.dtype != jnp.bool_:
        raise TypeError(f"gt_mask must be bool, got {args.gt_mask.dtype}")


def _labels_in_int32(labels):
    """Concrete integer labels outside int32's range, which the cast to int32 without
    x64 would wrap into valid classes, as -1 (an invalid label: the gt is ignored)."""
    if isinstance(labels, jax.Array) or not hasattr(labels, "dtype"):
        return labels  # a JAX array is already of JAX's integer width
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or jax.config.jax_enable_x64:
        return labels
    info = np.iinfo(np.int32)
    return np.where((labels < info.min) | (labels > info.max), -1, labels).astype(np.int32)


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "ndim")


def check_inputs(args: AssignArgs, *, batched: bool) -> AssignArgs:
    """Check the shapes and dtypes of an assigner's arguments before any tracing work.

    Returns:
      The arguments as arrays (NumPy or JAX; ``obj_logits`` may stay None).

    Raises:
      ValueError: a shape that does not fit the others, naming it (and, for a batch,
        every batched shape that was passed).
      TypeError: complex or non-numeric arrays, non-integer labels, a non-bool mask.
    """
    args = args._replace(gt_labels=_labels_in_int32(args.gt_labels))
    # Arrays (NumPy or JAX) pass as they are: jit moves them to the device faster
    # than a jnp.asarray here would copy them. Only lists and scalars are converted.
    args = AssignArgs(*(x if x is None or _is_array(x) else np.asarray(x) for x in args))
    if not batched:
        _check_shapes(args)
        return args
    shared = ("points", "strides")
    described = ", ".join(
        f"{n} {tuple(x.shape)}" for n, x in args._asdict().items() if x is not None
    )
    batched_fields = {n: x for n, x in args._asdict().items() if x is not None and n not in shared}
    if any(x.ndim == 0 for x in batched_fields.values()) or (
        len({x.shape[0] for x in batched_fields.values()}) > 1
    ):
        raise ValueError(
            "batched arguments need one common leading batch axis (all but points and "
            f"strides); got {described}"
        )
    one = AssignArgs(
        *(
            x if x is None or n in shared else jax.ShapeDtypeStruct(x.shape[1:], x.dtype)
            for n, x in args._asdict().items()
        )
    )
    _check_shapes(one, batch=described)
    return args


def valid_gts(gt_boxes: Array, gt_labels: Array, gt_mask: Array, num_classes: int) -> Array:
    """``[..., M]`` bool, the gts an assigner uses: set in ``gt_mask``, a finite box
    ``[..., M, 4]`` with positive width and height, a label in ``[0, num_classes)``."""
    return (
        gt_mask
        & jnp.all(jnp.isfinite(gt_boxes), axis=-1)
        & (gt_boxes[..., 2] > gt_boxes[..., 0])
        & (gt_boxes[..., 3] > gt_boxes[..., 1])
        & (gt_labels >= 0)
        & (gt_labels < num_classes)
    )


def prepare_inputs(
    pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits=None
) -> AssignInputs:
    """One image's arguments (an `AssignArgs`, splatted) cast to float32 under
    ``stop_gradient``, with bad values made harmless.

    - A gt is used only if ``gt_mask`` is set, its box is finite with positive
      width and height, and its label lies in ``[0, C)``; any other gt is treated
      as padding (it supplies nothing and is assigned nothing).
    - Non-finite predicted boxes get IoU 0 with every gt; non-finite logits are
      left for each assigner's cost, which maps non-finite costs to a large value.
    """
    pred_boxes, cls_logits, points, strides, gt_boxes = (
        jnp.asarray(x, jnp.float32) for x in (pred_boxes, cls_logits, points, strides, gt_boxes)
    )
    gt_labels, gt_mask = jnp.asarray(gt_labels), jnp.asarray(gt_mask)
    if obj_logits is not None:
        obj_logits = jnp.asarray(obj_logits, jnp.float32)
    args = AssignArgs(
        pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
    )
    _check_shapes(args)

    num_classes = cls_logits.shape[1]
    valid = valid_gts(gt_boxes, gt_labels, gt_mask, num_classes)
    gt_boxes = jnp.where(valid[:, None], gt_boxes, 0.0)
    gt_labels = jnp.clip(gt_labels, 0, num_classes - 1).astype(jnp.int32)
    ious = pairwise_iou(gt_boxes, pred_boxes)
    ious = jnp.where(valid[:, None] & jnp.isfinite(ious), ious, 0.0)
    inputs = AssignInputs(
        pred_boxes, cls_logits, obj_logits, points, strides, gt_boxes, gt_labels, valid, ious
    )
    # Assignment chooses targets; no gradient flows through that choice.
    return jax.tree.map(jax.lax.stop_gradient, inputs)


def vmap_images(one_image, args: AssignArgs, config) -> Assignment:
    """A batch's assignment from ``one_image(*image_args, config=config)``."""
    return jax.vmap(lambda image: one_image(*image, config=config), in_axes=(args.image_axes(),))(
        args
    )


def background_assignment(num_anchors: int, num_gt: int = 0) -> Assignment:
    """One image's assignment with every anchor background: an image without any gt
    slot (``num_gt == 0``) or without anchors."""
    return Assignment(
        gt_index=jnp.full((num_anchors,), -1, jnp.int32),
        fg_mask=jnp.zeros((num_anchors,), bool),
        labels=jnp.full((num_anchors,), -1, jnp.int32),
        box_targets=jnp.zeros((num_anchors, 4), jnp.float32),
        ious=jnp.zeros((num_anchors,), jnp.float32),
        num_fg=jnp.zeros((), jnp.int32),
        dynamic_k=jnp.zeros((num_gt,), jnp.int32),
        ignore_mask=jnp.zeros((num_anchors,), bool),
    )


def finite_cost(cost: Array) -> Array:
    """Replace NaN and inf entries of a cost by `NONFINITE_COST`."""
    return jnp.where(jnp.isfinite(cost), cost, NONFINITE_COST)


def make_assignment(
    gt_index: Array,
    inputs: AssignInputs,
    dynamic_k: Array,
    transport: Transport | None = None,
    *,
    ignore_mask: Array | None = None,
    anchor_ious: Array | None = None,
) -> Assignment:
    """Targets of every anchor from ``gt_index [A]`` (-1 background); ``ignore_mask [A]``
    marks background anchors to leave out of the losses (default none); ``anchor_ious
    [A]``, each anchor's IoU with its gt where the caller has it (default: gathered
    from ``inputs.ious``)."""
    fg_mask = gt_index >= 0
    if ignore_mask is None:
        ignore_mask = jnp.zeros(gt_index.shape, bool)
    safe_index = jnp.maximum(gt_index, 0)
    anchor_ids = np.arange(gt_index.shape[0])
    box_targets = jnp.where(fg_mask[:, None], inputs.gt_boxes[safe_index], 0.0)
    labels = jnp.where(fg_mask, inputs.gt_labels[safe_index], -1)
    if anchor_ious is None:
        anchor_ious = inputs.ious[safe_index, anchor_ids]
    ious = jnp.where(fg_mask, anchor_ious, 0.0)
    return Assignment(
        gt_index=gt_index.astype(jnp.int32),
        fg_mask=fg_mask,
        labels=labels.astype(jnp.int32),
        box_targets=box_targets,
        ious=ious,
        num_fg=fg_mask.sum(dtype=jnp.int32),
        dynamic_k=dynamic_k,
        ignore_mask=ignore_mask & ~fg_mask,
        transport=transport,
    )
