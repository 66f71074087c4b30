"""Size buckets: run a padded batch at the smallest static size that holds it.

Gts are padded to a static ``M`` (often 100) and anchors number ``A`` (8400 to
21824), but a COCO batch has a few real gts per image and a few hundred anchors
that matter. Each bucket is one compiled branch of a ``lax.switch`` with smaller
static shapes; the batch picks the first bucket its real sizes fit, so only that
branch runs. Padding never changes a result, so neither does the bucket.

How fine the sizes are depends on the backend (`ladders`). On a CPU time follows
the arithmetic, so sizes double (gts from 8, anchor columns from 512) and a
batch never runs on more than twice the size it needs: on the COCO-like
benchmark batches (2-core CPU) that made SimOTA 1.1x to 2.5x and OTA 1.4x to
1.7x faster than sizes that quadruple, for two to three times the first call's
compile time. Columns growing by 1.5x made SimOTA another 1.15x faster, for
1.6x the compile time (29 s instead of 18 s on yolox640): not taken.
On an accelerator a small batch's arithmetic takes microseconds and the
branches' overhead dominates: with the doubling sizes SimOTA took 4.8 ms per
yolox640 batch of 16 on an H200 (0.1 ms of it in kernels) against 1.4 ms with
sizes that quadruple (gts from 8, columns from 1024), which it keeps there (both
timed by a harness that held each result during the next call, which on an H100
made the quadrupling sizes' 0.47 ms look like 1.0 ms). One program at the padded
size was 2x to 7x slower than those on an H100.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ota_jax._src.inputs import background_assignment
from ota_jax.assignment import Assignment

__all__ = [
    "ACCELERATOR_LADDERS",
    "CHOICES",
    "CPU_GTS_AT_ONCE",
    "CPU_LADDERS",
    "CPU_PAIRS_AT_ONCE",
    "NO_LADDERS",
    "Ladders",
    "any_over_gts",
    "bucket_index",
    "by_columns",
    "by_real_gts",
    "gt_slices",
    "images_at_once",
    "ladder",
    "ladders",
    "on_real_gts",
    "real_gts_first",
    "restore_gt_order",
    "scatter_gt_rows",
    "split_gts",
    "switch",
    "take_gt_rows",
    "vmap_in_chunks",
]


class Ladders(NamedTuple):
    """The bucket sizes of one backend."""

    gt_start: int  # the smallest gt bucket
    column_start: int  # the smallest anchor-column bucket
    factor: int  # the growth from one bucket to the next


CPU_LADDERS = Ladders(gt_start=8, column_start=512, factor=2)
ACCELERATOR_LADDERS = Ladders(gt_start=8, column_start=1024, factor=4)


# One size, the padded one: a single compiled program per input shape (OTA keeps its
# compacted problem at ``max_columns`` and the dense fallback).
NO_LADDERS = Ladders(gt_start=sys.maxsize, column_start=sys.maxsize, factor=2)

# The choices of the OTA_JAX_BUCKETS environment variable besides "auto".
CHOICES = {"cpu": CPU_LADDERS, "accelerator": ACCELERATOR_LADDERS, "off": NO_LADDERS}


def ladders(backend: str | None = None) -> Ladders:
    """The bucket sizes, read when an assigner is traced.

    By default those of ``backend`` (default: ``jax.default_backend()``):
    `CPU_LADDERS` on ``"cpu"``, else `ACCELERATOR_LADDERS`. The environment variable
    ``OTA_JAX_BUCKETS`` overrides this: ``cpu``, ``accelerator``, or ``off``
    (`NO_LADDERS`: the first call compiles one program instead of one per bucket,
    several times faster, and every call runs at the padded size); ``auto`` or
    unset is the default. Set it before the first call: a compiled function keeps
    the buckets it was traced with.
    """
    choice = os.environ.get("OTA_JAX_BUCKETS", "auto").strip().lower() or "auto"
    if choice in CHOICES:
        return CHOICES[choice]
    if choice != "auto":
        raise ValueError(f"OTA_JAX_BUCKETS={choice!r}: expected one of auto, {', '.join(CHOICES)}")
    backend = jax.default_backend() if backend is None else backend
    return CPU_LADDERS if backend == "cpu" else ACCELERATOR_LADDERS


def ladder(limit: int, *, start: int, factor: int) -> tuple[int, ...]:
    """Ascending sizes ``start, start*factor, ...`` capped by and ending at ``limit``."""
    sizes = []
    size = start
    while size < limit:
        sizes.append(size)
        size *= factor
    return (*sizes, limit)


def bucket_index(needs: Sequence[Array], ladders: Sequence[Sequence[int]]) -> Array:
    """``[]`` int32: the first bucket ``s`` with ``needs[i] <= ladders[i][s]`` for every i.

    All ladders have the same length and end with sizes that hold anything.
    """
    fits = jnp.stack(
        [need <= jnp.asarray(sizes) for need, sizes in zip(needs, ladders, strict=True)]
    ).all(axis=0)
    return jnp.argmax(fits).astype(jnp.int32)


def real_gts_first(gt_mask: Array) -> Array:
    """``[B, M]`` int32 permutation of each image's gt slots: real gts first, in order."""
    return jnp.argsort(~gt_mask, axis=-1, stable=True).astype(jnp.int32)


def scatter_gt_rows(rows: Array, order: Array, num_gt: int, fill: float | int = 0) -> Array:
    """Put ``rows [R, ...]`` of the first R slots of ``order [M]`` back at their slots:
    ``[num_gt, ...]``, ``fill`` elsewhere."""
    out = jnp.full((num_gt, *rows.shape[1:]), fill, rows.dtype)
    return out.at[order[: rows.shape[0]]].set(rows)


def take_gt_rows(x: Array, order: Array, rows: int) -> Array:
    """``x [B, M, ...]`` at the first ``rows`` slots of ``order [B, M]``: ``[B, rows, ...]``."""
    index = order[:, :rows].reshape(order.shape[0], rows, *([1] * (x.ndim - 2)))
    return jnp.take_along_axis(x, index, axis=1)


def by_real_gts(
    args: tuple,
    run: Callable[..., Assignment],
    *,
    columns: tuple[Array, int | None] | None = None,
) -> Assignment:
    """Run an assigner on the smallest gt bucket that holds every image's real gts.

    Args:
      args: the batched assigner arguments ``(pred_boxes, cls_logits, points, strides,
        gt_boxes, gt_labels, gt_mask, obj_logits)``. With no gt slot (``M == 0``)
        every anchor is background and ``run`` is not called.
      run: the assigner on such arguments, ``run(args)``; it gets the gts cut to R
        slots, real first. With ``columns``, ``run(args, columns=...)`` as for
        `by_columns`.
      columns: optional ``(needed, limit)`` as for `by_columns`, whose bucket is then
        chosen in the same ``lax.switch`` as the gts' (on a GPU a switch whose
        branches hold a loop, OTA's Sinkhorn, reads its branch index on the host:
        one switch reads it once).

    Returns:
      ``run``'s batched `Assignment`, in the caller's gt numbering.
    """
    num_images, num_gt = args[6].shape
    if num_gt == 0:  # static: no gt slot at all
        empty = background_assignment(args[2].shape[0])
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_images, *x.shape)), empty)
    order, gt_sizes, gt_need = _gt_buckets(args)

    def restored(rows: int, **sizes):
        def branch(args: tuple) -> Assignment:
            result = run(_cut_gts(args, order, rows), **sizes)
            return jax.vmap(partial(restore_gt_order, num_gt=num_gt))(result, order)

        return branch

    if columns is None:
        index = bucket_index([gt_need], [gt_sizes])
        return switch(index, [restored(rows) for rows in gt_sizes], args)
    needed, limit = columns
    num_anchors = args[2].shape[0]
    # Gt-major pairs: the first that fits has the smallest gt and column sizes that do.
    pairs = [(rows, c) for rows in gt_sizes for c in _column_ladder(num_anchors, limit)]
    index = bucket_index([gt_need, needed], [[r for r, _ in pairs], [c for _, c in pairs]])
    branches = [restored(r, columns=None if c >= num_anchors else c) for r, c in pairs]
    return switch(index, branches, args)


def on_real_gts(args: tuple, run: Callable[[tuple], Any]) -> Any:
    """``run(args)`` with the gts cut to the smallest bucket that holds every image's
    real gts (real first), for a result without a gt axis, returned as it is (so the
    same in every bucket). ``M`` must be positive."""
    order, gt_sizes, gt_need = _gt_buckets(args)
    index = bucket_index([gt_need], [gt_sizes])

    def at(rows: int):
        return lambda args: run(_cut_gts(args, order, rows))

    return switch(index, [at(rows) for rows in gt_sizes], args)


def _cut_gts(args: tuple, order: Array, rows: int) -> tuple:
    """``args`` with gt_boxes, gt_labels and gt_mask at the first ``rows`` slots of ``order``."""
    cut = [take_gt_rows(x, order, rows) for x in (args.gt_boxes, args.gt_labels, args.gt_mask)]
    return args.with_gts(*cut)


def _gt_buckets(args: tuple) -> tuple[Array, tuple[int, ...], Array]:
    """The batch's gt order (`real_gts_first`), its gt bucket sizes, and the most real
    gts an image has."""
    gt_mask = args[6]
    steps = ladders()
    sizes = ladder(gt_mask.shape[1], start=steps.gt_start, factor=steps.factor)
    return real_gts_first(gt_mask), sizes, gt_mask.sum(axis=1).max()


def _column_ladder(num_anchors: int, limit: int | None) -> tuple[int, ...]:
    """Column buckets up to ``limit`` (None: none), then ``num_anchors``: all anchors."""
    steps = ladders()
    sizes = ()
    if limit is not None:
        sizes = ladder(min(limit, num_anchors), start=steps.column_start, factor=steps.factor)
    return (*tuple(c for c in sizes if c < num_anchors), num_anchors)


def by_columns(
    args: tuple, needed: Array, limit: int | None, run: Callable[..., Assignment]
) -> Assignment:
    """Run an assigner on the smallest anchor-column bucket that holds ``needed``.

    Args:
      args: the batched assigner arguments.
      needed: ``[]`` int, the most columns an image of the batch needs.
      limit: the largest gathered size (None: never gather); beyond it ``run`` gets
        ``columns=None``, all anchors.
      run: ``run(args, columns=...)``.
    """
    num_anchors = args[2].shape[0]
    sizes = _column_ladder(num_anchors, limit)
    index = bucket_index([needed], [sizes])
    branches = [partial(run, columns=None if c >= num_anchors else c) for c in sizes]
    return switch(index, branches, args)


# On a CPU, the gt-anchor pairs whose buffers one step of `vmap_in_chunks` holds.
CPU_PAIRS_AT_ONCE = 1 << 18


def images_at_once(num_images: int, pairs_per_image: int) -> int:
    """How many images' ``[M, K]`` problems (``pairs_per_image = M * K``) to build at
    once: all of them, except on a CPU when their pairs exceed `CPU_PAIRS_AT_ONCE`
    (then the largest divisor of the batch that fits, at least one image).

    XLA:CPU allocates a call's temporary buffers as one block, sized for its
    largest size bucket. Above glibc's 32 MiB mmap threshold the block is mapped
    afresh at every call and the kernel zeroes each page the call touches: for
    SimOTA on a yolox640 batch of 16 (a 222 MiB block) about 1000 page faults and
    2 to 3 ms of system time in a 6 to 7 ms call. Taking the large buckets a few
    images at a time keeps that block at 15 MiB there and the faults near none:
    1.17x faster (2-core CPU, both versions interleaved in one process); crowd500,
    whose own bucket then runs a few images at a time, takes 1.3x as long. The
    blocks shrink everywhere: crowd1000's from 2.2 GiB to 138 MiB. A single image
    with more pairs than the limit takes its gts in slices (`gt_slices`).
    """
    if jax.default_backend() != "cpu":
        return num_images
    fits = max(1, CPU_PAIRS_AT_ONCE // max(pairs_per_image, 1))
    return max(d for d in range(1, min(fits, num_images) + 1) if num_images % d == 0)


def gt_slices(num_gt: int, num_anchors: int) -> int:
    """In how many slices to take one image's gts (`split_gts`): one, except on a CPU
    when its ``num_gt * num_anchors`` pairs exceed `CPU_PAIRS_AT_ONCE` (a single image
    too large for `images_at_once`)."""
    if jax.default_backend() != "cpu":
        return 1
    return max(1, min(num_gt, -(-num_gt * num_anchors // CPU_PAIRS_AT_ONCE)))


def vmap_in_chunks(fn: Callable, chunk: int, *batched):
    """``jax.vmap(fn)(*batched)``, ``chunk`` images (a divisor of the batch) at a time
    in a loop, unless the batch is split over devices (all at once: each device's are its
    own). ``None`` arguments pass through as ``None``."""
    num_images = batched[0].shape[0]
    if chunk >= num_images or _on_devices(batched[0]):
        return jax.vmap(fn)(*batched)

    def step(i):
        # Slices of the caller's arrays: a loop over stacked chunks would copy them.
        part = [
            None if x is None else jax.lax.dynamic_slice_in_dim(x, i * chunk, chunk)
            for x in batched
        ]
        return jax.vmap(fn)(*part)

    out = jax.lax.map(step, jnp.arange(num_images // chunk))
    return jax.tree.map(lambda y: y.reshape(num_images, *y.shape[2:]), out)


def _on_devices(x: Array) -> bool:
    """Whether ``x``'s leading (image) axis may be split over devices: sharded over an
    Explicit mesh axis, or traced under a mesh of several devices (Auto axes don't show in
    types). A chunk of the global batch is then no device's own images: an Explicit axis
    refuses to slice it, an Auto one gathers every image onto every device."""
    spec = jax.typeof(x).sharding.spec
    return (len(spec) > 0 and spec[0] is not None) or jax.sharding.get_abstract_mesh().size > 1


# On a CPU, the most gts `any_over_gts` tests at once.
CPU_GTS_AT_ONCE = 32


def any_over_gts(fn: Callable[[Array, Array], Array], gt_boxes: Array, gt_mask: Array) -> Array:
    """``[B, A]``: an anchor mask ORed over gts, ``fn(gt_boxes, gt_mask)`` with
    ``gt_boxes [B, M, 4]`` and ``gt_mask [B, M]`` giving ``[B, M, A]`` (all False
    for a gt that ``gt_mask`` marks invalid).

    On a CPU with more than `CPU_GTS_AT_ONCE` gt slots, the gts are taken in
    equal slices of at most that many (padded with invalid gts) in a loop.
    XLA:CPU splits a reduction over more than 32 elements into a windowed one,
    which stores the whole ``[B, M, A]`` mask first: 35 MB for a batch of 16
    fcos1024 images padded to 100 gts (see `images_at_once` for why temporaries'
    size matters). In
    slices the mask needs almost nothing, and SimOTA's prefilter of that batch
    took 12 ms instead of 19 (2-core CPU).
    """
    num_gt = gt_mask.shape[1]
    steps = 1 if jax.default_backend() != "cpu" else -(-num_gt // CPU_GTS_AT_ONCE)
    if steps <= 1:
        return fn(gt_boxes, gt_mask).any(axis=1)
    boxes, mask = split_gts(gt_boxes, steps, axis=1), split_gts(gt_mask, steps, axis=1)

    def step(found, gts):
        return found | fn(*gts).any(axis=1), None

    return jax.lax.scan(step, fn(boxes[0], mask[0]).any(axis=1), (boxes[1:], mask[1:]))[0]


def split_gts(x: Array, steps: int, axis: int = 0) -> Array:
    """``x``'s gt ``axis`` (of size M) cut into ``steps`` equal slices, zero-padded at
    the end (padded gts have ``gt_mask`` False): ``[steps, ..., ceil(M / steps), ...]``."""
    num_gt = x.shape[axis]
    size = -(-num_gt // steps)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, steps * size - num_gt)
    x = jnp.pad(x, pad)
    return jnp.moveaxis(x.reshape(*x.shape[:axis], steps, size, *x.shape[axis + 1 :]), axis, 0)


def switch(index: Array, branches: Sequence, *operands):
    """``lax.switch``, skipping it when there is a single branch."""
    if len(branches) == 1:
        return branches[0](*operands)
    return jax.lax.switch(index, list(branches), *operands)


def restore_gt_order(assignment: Assignment, order: Array, num_gt: int) -> Assignment:
    """One image's assignment computed on the first R slots of ``order [M]``, in the
    caller's gt numbering (``num_gt`` slots)."""
    gt_index = jnp.where(assignment.gt_index >= 0, order[assignment.gt_index], -1)
    transport = assignment.transport
    if transport is not None:
        rows = transport.plan.shape[0] - 1

        def gt_rows_back(x, fill=0.0):
            return jnp.concatenate([scatter_gt_rows(x[:rows], order, num_gt, fill), x[rows:]])

        transport = transport._replace(
            plan=gt_rows_back(transport.plan),
            cost=gt_rows_back(transport.cost),
            supply=gt_rows_back(transport.supply),
        )
    return assignment._replace(
        gt_index=gt_index,
        dynamic_k=scatter_gt_rows(assignment.dynamic_k, order, num_gt),
        transport=transport,
    )
