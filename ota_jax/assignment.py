"""The result every assigner returns, and the input handling they share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from ota_jax.boxes import pairwise_iou
from ota_jax.transport import Transport

__all__ = ["AssignInputs", "Assignment", "prepare_inputs", "valid_gts"]

# Stands in for a non-finite cost (NaN or inf predictions): larger than any
# penalised pair, so such a pair is chosen only when nothing else is left.
NONFINITE_COST = 1e8


class Assignment(NamedTuple):
    """Which gt each anchor point trains on, and its targets. One image: leading dims
    are absent; a batch adds a leading ``[B]`` to every field.

    Attributes:
      gt_index: ``[A]`` int32, the gt each anchor is assigned to, -1 for background.
      fg_mask: ``[A]`` bool, ``gt_index >= 0``.
      labels: ``[A]`` int32 class of the assigned gt, -1 for background
        (``jax.nn.one_hot`` turns -1 into an all-zero target).
      box_targets: ``[A, 4]`` float32 xyxy box of the assigned gt, zeros for background.
      ious: ``[A]`` float32 IoU of each positive's predicted box with its gt, 0 for
        background (the target of an IoU branch).
      num_fg: ``[]`` int32 number of positive anchors.
      dynamic_k: ``[M]`` int32 labels each gt supplies, 0 for padded gts. Rule-based
        assigners without a k (FCOS, ATSS, Max-IoU) report the positives each gt won,
        TAL the anchors each gt took before conflicts.
      ignore_mask: ``[A]`` bool, anchors that are neither positive nor negative (Max-IoU's
        band between its two thresholds); losses leave them out. All False elsewhere.
      transport: OTA only, when asked for (``OTAConfig(return_transport=True)``) and M > 0:
        the solved problem, cost and plan ``[M+1, A]`` with the background row last.
    """

    gt_index: Array
    fg_mask: Array
    labels: Array
    box_targets: Array
    ious: Array
    num_fg: Array
    dynamic_k: Array
    ignore_mask: Array | None = None
    transport: Transport | None = None


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


def _check_shapes(
    pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits
) -> None:
    """Raises ValueError/TypeError naming the offending argument; runs at trace time."""
    num_anchors = points.shape[0] if points.ndim == 2 else None
    expected = {
        "points": (points, (num_anchors, 2)),
        "strides": (strides, (num_anchors,)),
        "pred_boxes": (pred_boxes, (num_anchors, 4)),
        "cls_logits": (cls_logits, (num_anchors, None)),
        "gt_boxes": (gt_boxes, (None, 4)),
        "gt_labels": (gt_labels, (gt_boxes.shape[0],)),
        "gt_mask": (gt_mask, (gt_boxes.shape[0],)),
    }
    if obj_logits is not None:
        expected["obj_logits"] = (obj_logits, (num_anchors,))
    for name, (value, shape) in expected.items():
        if value.ndim != len(shape) or any(
            want is not None and have != want for have, want in zip(value.shape, shape, strict=True)
        ):
            pretty = ", ".join(
                "A" if d == num_anchors else ("*" if d is None else str(d)) for d in shape
            )
            raise ValueError(
                f"{name} has shape {tuple(value.shape)}, expected [{pretty}] "
                f"(A={num_anchors} anchor points, M={gt_boxes.shape[0]} gts; one image, "
                "use the *_batch function for a leading batch axis)"
            )
    if cls_logits.shape[1] == 0:
        raise ValueError("cls_logits has no classes")
    if not jnp.issubdtype(gt_labels.dtype, jnp.integer):
        raise TypeError(f"gt_labels must be integers, got {gt_labels.dtype}")
    if gt_mask.dtype != jnp.bool_:
        raise TypeError(f"gt_mask must be bool, got {gt_mask.dtype}")


_BATCHED = ("pred_boxes", "cls_logits", "gt_boxes", "gt_labels", "gt_mask", "obj_logits")
_ARG_NAMES = (
    "pred_boxes",
    "cls_logits",
    "points",
    "strides",
    "gt_boxes",
    "gt_labels",
    "gt_mask",
    "obj_logits",
)


def check_inputs(args: tuple, *, batched: bool) -> tuple:
    """Check the shapes and dtypes of an assigner's arguments before any tracing work.

    Args:
      args: ``(pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask,
        obj_logits)``, with a leading batch axis on all but points and strides when
        ``batched``.

    Returns:
      The arguments as JAX arrays (``obj_logits`` may stay None).
    """
    args = tuple(x if x is None else jnp.asarray(x) for x in args)
    named = dict(zip(_ARG_NAMES, args, strict=True))
    if batched:
        sizes = {
            n: x.shape[0]
            for n, x in named.items()
            if n in _BATCHED and x is not None and x.ndim > 0
        }
        missing = [n for n, x in named.items() if n in _BATCHED and x is not None and x.ndim == 0]
        if missing or len(set(sizes.values())) > 1:
            raise ValueError(
                "batched arguments need one common leading batch axis; got "
                + ", ".join(f"{n}: {tuple(x.shape)}" for n, x in named.items() if x is not None)
            )
        named = {
            n: jax.ShapeDtypeStruct(x.shape[1:], x.dtype) if n in _BATCHED and x is not None else x
            for n, x in named.items()
        }
    _check_shapes(*named.values())
    return args


_PUBLIC_DOC = """{summary}

    Args:
      pred_boxes: ``[A, 4]`` predicted boxes, xyxy pixels.
      cls_logits: ``[A, C]`` class logits.
      points: ``[A, 2]`` anchor point centres ``(x, y)`` in pixels.
      strides: ``[A]`` stride of each anchor's FPN level.
      gt_boxes: ``[M, 4]`` gt boxes, xyxy pixels; M may be 0.
      gt_labels: ``[M]`` int gt classes in ``[0, C)``.
      gt_mask: ``[M]`` bool, True for real gts, False for padding.
      obj_logits: {obj_logits}
      config: its `{config}` (static).

    Returns:
      {returns}
    """

_PUBLIC_BATCH_DOC = """`{name}` over a batch: a leading ``[B]`` axis on every argument except
    ``points [A, 2]`` and ``strides [A]``, shared by all images. Gts are padded to a
    common ``M`` with ``gt_mask``; padding never changes a result. A batch of no
    images (``B == 0``) gives every field with 0 images."""


def public_assigners(
    assign_batch: Callable[[tuple, Any], Assignment],
    config_class: type,
    *,
    name: str,
    summary: str,
    obj_logits: str,
    returns: str,
) -> tuple[Callable[..., Assignment], Callable[..., Assignment]]:
    """An assigner's two public, jitted functions, ``<name>_assign`` (one image) and
    ``<name>_assign_batch``, from its batched implementation.

    Every assigner has the same signature (that of `ota_jax.ota_assign`), checks its
    inputs the same way and documents the same arguments; only the summary, what
    ``obj_logits`` does and the notes on the result differ.

    Args:
      assign_batch: ``assign_batch(args, config) -> Assignment`` on checked, batched
        ``args = (pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask,
        obj_logits)``.
      config_class: the assigner's frozen config dataclass; its default is the default.
      name: the functions' name stem (``"ota"`` gives ``ota_assign``, ``ota_assign_batch``).
      summary, obj_logits, returns: the one-image docstring's summary (a first line,
        then paragraphs), its ``obj_logits`` entry and its Returns section.
    """
    default = config_class()

    def assign(
        pred_boxes: ArrayLike,
        cls_logits: ArrayLike,
        points: ArrayLike,
        strides: ArrayLike,
        gt_boxes: ArrayLike,
        gt_labels: ArrayLike,
        gt_mask: ArrayLike,
        *,
        obj_logits: ArrayLike | None = None,
        config: Any = default,
    ) -> Assignment:
        config = resolved_sizes(config)
        args = (pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits)
        return assign_one_image(assign_batch, args, config)

    def assign_batched(
        pred_boxes: ArrayLike,
        cls_logits: ArrayLike,
        points: ArrayLike,
        strides: ArrayLike,
        gt_boxes: ArrayLike,
        gt_labels: ArrayLike,
        gt_mask: ArrayLike,
        *,
        obj_logits: ArrayLike | None = None,
        config: Any = default,
    ) -> Assignment:
        config = resolved_sizes(config)
        args = (pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits)
        args = check_inputs(args, batched=True)
        if args[6].shape[0] == 0:  # static: no image at all
            return _no_images(assign_batch, args, config)
        return assign_batch(args, config)

    one_name, batch_name = f"{name}_assign", f"{name}_assign_batch"
    docs = (
        _PUBLIC_DOC.format(
            summary=summary, obj_logits=obj_logits, config=config_class.__name__, returns=returns
        ),
        _PUBLIC_BATCH_DOC.format(name=one_name),
    )
    functions = []
    for function, function_name, doc in zip(
        (assign, assign_batched), (one_name, batch_name), docs, strict=True
    ):
        function.__name__ = function.__qualname__ = function_name
        function.__module__ = assign_batch.__module__
        function.__doc__ = doc
        function.__annotations__["config"] = config_class.__name__
        functions.append(jax.jit(function, static_argnames=("config",)))
    return functions[0], functions[1]


def resolved_sizes(config: Any) -> Any:
    """``config`` with its ``sizes`` field resolved (`ota_jax.buckets.resolve_sizes`)."""
    from ota_jax.buckets import resolve_sizes  # buckets imports this module

    sizes = resolve_sizes(config.sizes)
    return config if sizes is config.sizes else dataclasses.replace(config, sizes=sizes)


def _no_images(assign_batch, args: tuple, config) -> Assignment:
    """The assignment of a batch of no images: each field as for one image, with
    0 along the batch."""
    shared = (2, 3)  # points and strides have no batch axis
    one = tuple(
        x if i in shared or x is None else jnp.zeros((1, *x.shape[1:]), x.dtype)
        for i, x in enumerate(args)
    )
    shapes = jax.eval_shape(lambda batch: assign_batch(batch, config), one)
    return jax.tree.map(lambda s: jnp.zeros((0, *s.shape[1:]), s.dtype), shapes)


def vmap_images(one_image, args: tuple, config) -> Assignment:
    """A batched assignment from ``one_image(*args, config=config)`` on one image's arguments.

    ``args`` are the batched ``(pred_boxes, cls_logits, points, strides, gt_boxes,
    gt_labels, gt_mask, obj_logits)``; points and strides are shared, obj_logits may be None.
    """
    in_axes = (0, 0, None, None, 0, 0, 0, None if args[7] is None else 0)
    return jax.vmap(partial(one_image, config=config), in_axes=in_axes)(*args)


def assign_one_image(assign_batch, args: tuple, config) -> Assignment:
    """Run a batched assigner ``assign_batch(args, config)`` on one image's arguments."""
    args = check_inputs(args, batched=False)
    args = tuple(x if i in (2, 3) or x is None else x[None] for i, x in enumerate(args))
    return jax.tree.map(lambda x: x[0], assign_batch(args, config))


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
    """Check shapes and dtypes, cast to float32 under ``stop_gradient``, and make bad
    values harmless.

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
    _check_shapes(pred_boxes, cls_logits, points, strides, gt_boxes, gt_labels, gt_mask, obj_logits)

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


def background_assignment(num_anchors: int) -> Assignment:
    """The assignment of an image without any gt slot (``M == 0``): all background."""
    return Assignment(
        gt_index=jnp.full((num_anchors,), -1, jnp.int32),
        fg_mask=jnp.zeros((num_anchors,), bool),
        labels=jnp.full((num_anchors,), -1, jnp.int32),
        box_targets=jnp.zeros((num_anchors, 4), jnp.float32),
        ious=jnp.zeros((num_anchors,), jnp.float32),
        num_fg=jnp.zeros((), jnp.int32),
        dynamic_k=jnp.zeros((0,), jnp.int32),
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
