"""Size buckets: run a padded batch at the smallest static size that holds it.

Gts are padded to a static ``M`` (often 100) and anchors number ``A`` (8400 to
21824), but a COCO batch has a few real gts per image and a few hundred anchors
that matter. Each bucket is one compiled branch of a ``lax.switch`` with smaller
static shapes; the batch picks the first bucket its real sizes fit, so only that
branch runs. Padding never changes a result, so neither does the bucket.

The sizes are a config's static ``sizes`` field: a name that the public functions
resolve with `resolve_sizes` (from the backend, or ``OTA_JAX_BUCKETS``) before the
assigner is traced, or a `Sizes` given outright; every function here takes the
resolved `Sizes` and reads neither the environment nor the backend. Every
branch is compiled on the first call, so their number is that call's cost: on a
CPU the default is a staircase of seven ``(gts, columns)`` pairs (`CPU_PAIRS`)
instead of the doubling ladders' 25 to 30 (below), with the same buckets for the
benchmark batches, and a problem of at most `SMALL_PAIRS` padded pairs (a tiny
detector's) is not bucketed at all (numbers in docs/performance_history.md,
"Compile time by size policy").

The doubling ladders (`CPU_LADDER_SIZES`, the CPU default before) run each batch
at most twice the size it needs, for several times the first call's compile
time. On an accelerator a small batch's arithmetic takes microseconds and each
branch's overhead dominates: `ACCELERATOR_SIZES` quadruple (gts from 8, columns
from 1024). What each choice measured is in docs/performance_history.md.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from ota_jax._src.inputs import AssignArgs, background_assignment
from ota_jax.assignment import Assignment

__all__ = [
    "ACCELERATOR_SIZES",
    "CHOICES",
    "CPU_LADDER_SIZES",
    "CPU_PAIRS",
    "CPU_SIZES",
    "SMALL_PAIRS",
    "Sizes",
    "any_over_gts",
    "bucket_index",
    "by_real_gts",
    "gt_slices",
    "images_at_once",
    "ladder",
    "on_real_gts",
    "real_gts_first",
    "resolve_sizes",
    "restore_gt_order",
    "scatter_gt_rows",
    "split_gts",
    "switch",
    "take_gt_rows",
    "unbucketed",
    "vmap_in_chunks",
]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The static sizes an assigner runs at: its size buckets and, on a CPU, how much
    of a batch one step holds. Frozen and hashable (a config's static field);
    `resolve_sizes` makes one from a name.

    Attributes:
      gt_start: the smallest gt bucket; None: no gt buckets, every gt slot is kept.
      column_start: the smallest anchor-column bucket; None: no column buckets (OTA
        still compacts to its ``max_columns``).
      factor: the growth from one bucket to the next.
      pairs: the ``(gts, columns)`` buckets themselves, in the order they are tried
        (cheapest first), instead of every gt size with every column size; a size is
        rounded up to the buckets the other pairs make, None gts means every gt slot.
        ``(all gts, the largest gathered size)`` and ``(all gts, all anchors)`` end it.
        Gt-only switches use its gt sizes. Empty: the ladders above.
      max_pairs: problems of at most this many gt-anchor pairs (padded ``M * A``) run
        at their padded size, unbucketed. 0: always bucket.
      pairs_at_once: the gt-anchor pairs one step of `vmap_in_chunks` may hold
        (`images_at_once`, `gt_slices`); None: no limit.
      gts_at_once: the most gts `any_over_gts` tests at once; None: no limit.
      tile: ``(gts, columns)``, the tile of an assigner that takes its problem in
        tiles, in loops as long as the batch needs (SimOTA), instead of buckets.
    """

    gt_start: int | None = 8
    column_start: int | None = 512
    factor: int = 2
    pairs: tuple[tuple[int | None, int], ...] = ()
    max_pairs: int = 0
    pairs_at_once: int | None = None
    gts_at_once: int | None = None
    tile: tuple[int, int] = (16, 512)

    def __post_init__(self):
        for name in ("gt_start", "column_start", "pairs_at_once", "gts_at_once"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"Sizes.{name} must be positive or None, got {value}")
        if self.factor < 2:
            raise ValueError(f"Sizes.factor must be at least 2, got {self.factor}")
        pairs = tuple((g, c) for g, c in self.pairs)  # hashable, whatever was given
        if any((g is not None and g < 1) or c < 1 for g, c in pairs):
            raise ValueError(f"Sizes.pairs must hold positive sizes, got {self.pairs}")
        object.__setattr__(self, "pairs", pairs)
        tile = tuple(self.tile)
        if len(tile) != 2 or min(tile) < 1:
            raise ValueError(f"Sizes.tile must be two positive sizes, got {self.tile}")
        object.__setattr__(self, "tile", tile)

    @property
    def off(self) -> bool:
        """No bucket at all: one program at the padded size."""
        return self.gt_start is None and self.column_start is None


# On a CPU, the gt-anchor pairs whose buffers one step of `vmap_in_chunks` holds
# (`images_at_once`), and the most gts `any_over_gts` tests at once.
_CPU_CHUNKS = {"pairs_at_once": 1 << 18, "gts_at_once": 32}

# Problems of at most this many gt-anchor pairs run unbucketed (a tiny detector's
# 16 gts x 1364 anchors: one program compiles several times faster than the buckets
# and runs in well under a millisecond more; see docs/performance_history.md).
SMALL_PAIRS = 1 << 15

# On a CPU, the (gts, columns) buckets as a staircase: the buckets of the COCO-like
# benchmark batches (yolox640 and fcos1024 at 16 gts, crowd100 at all gts) stay as
# the doubling ladders (gts from 8, columns from 512) made them, with 7 switch
# branches instead of their 25 to 30 (docs/performance_history.md, "Compile time by
# size policy").
CPU_PAIRS = ((16, 512), (16, 1024), (32, 1024), (32, 2048), (None, 2048), (None, 4096))
CPU_SIZES = Sizes(pairs=CPU_PAIRS, max_pairs=SMALL_PAIRS, **_CPU_CHUNKS)
# The doubling ladders' product, the CPU's sizes before (docs/performance_history.md).
CPU_LADDER_SIZES = Sizes(gt_start=8, column_start=512, factor=2, **_CPU_CHUNKS)
ACCELERATOR_SIZES = Sizes(
    gt_start=8, column_start=1024, factor=4, max_pairs=SMALL_PAIRS, tile=(64, 2048)
)

# The names `resolve_sizes` takes besides "auto" (also the values of OTA_JAX_BUCKETS).
CHOICES = ("cpu", "accelerator", "off")


def resolve_sizes(sizes: str | Sizes = "auto", backend: str | None = None) -> Sizes:
    """The `Sizes` a config's ``sizes`` field names. Call it outside tracing: it reads
    the environment and the backend, which a compiled program must not.

    ``"cpu"``: `CPU_SIZES`. ``"accelerator"``: `ACCELERATOR_SIZES`. ``"off"``: no
    buckets, a single program at the padded size (the first call compiles one
    program instead of one per bucket; every call runs at the padded size), with the
    backend's chunking. ``"auto"``: the environment variable ``OTA_JAX_BUCKETS``
    (``cpu``, ``accelerator`` or ``off``; ``auto`` or unset: by ``backend``, default
    ``jax.default_backend()``: `CPU_SIZES` on ``"cpu"``, else `ACCELERATOR_SIZES`).
    A `Sizes` is returned as it is.
    """
    if isinstance(sizes, Sizes):
        return sizes
    if not isinstance(sizes, str):
        raise TypeError(f"sizes must be a name or a Sizes, got {sizes!r}")
    choice = sizes
    if sizes == "auto":
        choice = os.environ.get("OTA_JAX_BUCKETS", "auto").strip().lower() or "auto"
        if choice not in ("auto", *CHOICES):
            raise ValueError(
                f"OTA_JAX_BUCKETS={choice!r}: expected one of auto, {', '.join(CHOICES)}"
            )
    elif sizes not in CHOICES:
        raise ValueError(f"sizes={sizes!r}: expected a Sizes or one of auto, {', '.join(CHOICES)}")
    on_cpu = (jax.default_backend() if backend is None else backend) == "cpu"
    if choice == "cpu":
        return CPU_SIZES
    if choice == "accelerator":
        return ACCELERATOR_SIZES
    chunks = _CPU_CHUNKS if on_cpu else {}
    if choice == "off":
        return Sizes(gt_start=None, column_start=None, **chunks)
    return CPU_SIZES if on_cpu else ACCELERATOR_SIZES


def _checked(sizes: Sizes) -> Sizes:
    if not isinstance(sizes, Sizes):
        raise TypeError(f"expected resolved Sizes, got {sizes!r}: call resolve_sizes outside jit")
    return sizes


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
    args: AssignArgs,
    run: Callable[..., Assignment],
    *,
    sizes: Sizes,
    columns: tuple[Array, int | None] | None = None,
) -> Assignment:
    """Run an assigner on the smallest gt bucket that holds every image's real gts.

    Args:
      args: the batched assigner arguments. With no gt slot (``M == 0``) every
        anchor is background and ``run`` is not called.
      run: the assigner on such arguments, ``run(args)``; it gets the gts cut to R
        slots, real first. With ``columns``, ``run(args, columns=...)`` with the
        column bucket (None: all anchors).
      sizes: the resolved `Sizes`.
      columns: optional ``(needed, limit)``: ``needed [] int``, the most anchor
        columns an image of the batch needs, and ``limit``, the largest gathered size
        (None: never gather; beyond it ``run`` gets ``columns=None``, all anchors).
        Their bucket is chosen in the same ``lax.switch`` as the gts' (on a GPU a
        switch whose branches hold a loop, OTA's Sinkhorn, reads its branch index on
        the host: one switch reads it once).

    Returns:
      ``run``'s batched `Assignment`, in the caller's gt numbering.
    """
    num_images, num_gt = args.gt_mask.shape
    if num_gt == 0:  # static: no gt slot at all
        empty = background_assignment(args.points.shape[0])
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_images, *x.shape)), empty)
    order, gt_sizes, gt_need = _gt_buckets(args, sizes)

    def restored(rows: int, **kwargs):
        def branch(args: AssignArgs) -> Assignment:
            result = run(_cut_gts(args, order, rows), **kwargs)
            return jax.vmap(partial(restore_gt_order, num_gt=num_gt))(result, order)

        return branch

    if columns is None:
        index = bucket_index([gt_need], [gt_sizes])
        return switch(index, [restored(rows) for rows in gt_sizes], args)
    needed, limit = columns
    num_anchors = args.points.shape[0]
    pairs = _pairs(gt_sizes, _column_ladder(num_anchors, limit, sizes, num_gt), sizes)
    index = bucket_index([gt_need, needed], [[r for r, _ in pairs], [c for _, c in pairs]])
    branches = [restored(r, columns=None if c >= num_anchors else c) for r, c in pairs]
    return switch(index, branches, args)


def _pairs(gt_sizes: Sequence[int], column_sizes: Sequence[int], sizes: Sizes):
    """The ``(gts, columns)`` buckets in the order they are tried: ``sizes.pairs``
    rounded up to the gt and column sizes, then every gt slot with the two largest
    column sizes, leaving out a pair that an earlier one holds; without
    ``sizes.pairs``, every gt size with every column size, gt-major (the first that
    fits has the smallest gt and column sizes that do)."""
    if not sizes.pairs or len(gt_sizes) == 1:
        return [(rows, c) for rows in gt_sizes for c in column_sizes]
    up = lambda ladder, size: next((s for s in ladder if s >= size), ladder[-1])
    wanted = [(up(gt_sizes, g or gt_sizes[-1]), up(column_sizes, c)) for g, c in sizes.pairs]
    wanted += [(gt_sizes[-1], c) for c in column_sizes[-2:]]
    pairs = []
    for rows, c in wanted:
        if not any(r >= rows and k >= c for r, k in pairs):
            pairs.append((rows, c))
    return pairs


def on_real_gts(args: AssignArgs, run: Callable[[AssignArgs], Any], *, sizes: Sizes) -> Any:
    """``run(args)`` with the gts cut to the smallest bucket that holds every image's
    real gts (real first), for a result without a gt axis, returned as it is (so the
    same in every bucket). ``M`` must be positive."""
    order, gt_sizes, gt_need = _gt_buckets(args, sizes)
    index = bucket_index([gt_need], [gt_sizes])

    def at(rows: int):
        return lambda args: run(_cut_gts(args, order, rows))

    return switch(index, [at(rows) for rows in gt_sizes], args)


def _cut_gts(args: AssignArgs, order: Array, rows: int) -> AssignArgs:
    """``args`` with gt_boxes, gt_labels and gt_mask at the first ``rows`` slots of ``order``."""
    cut = [take_gt_rows(x, order, rows) for x in (args.gt_boxes, args.gt_labels, args.gt_mask)]
    return args.with_gts(*cut)


def unbucketed(sizes: Sizes, num_gt: int, num_anchors: int) -> bool:
    """No buckets for this problem: `Sizes` says so, or it is small (``max_pairs``)."""
    return _checked(sizes).off or num_gt * num_anchors <= sizes.max_pairs


def _sizes_up_to(
    limit: int, start: int | None, listed: Iterable[int], sizes: Sizes, whole: bool
) -> tuple[int, ...]:
    """Ascending bucket sizes ending at ``limit``: the ``listed`` ones of ``sizes.pairs``
    (capped at ``limit``), else a ladder from ``start``; only ``limit`` without buckets."""
    if whole or (not sizes.pairs and start is None):
        return (limit,)
    if sizes.pairs:
        return tuple(sorted({min(size, limit) for size in listed} | {limit}))
    return ladder(limit, start=start, factor=sizes.factor)


def _gt_buckets(args: AssignArgs, sizes: Sizes) -> tuple[Array, tuple[int, ...], Array]:
    """The batch's gt order (`real_gts_first`), its gt bucket sizes, and the most real
    gts an image has."""
    gt_mask = args.gt_mask
    num_gt = gt_mask.shape[1]
    listed = (g or num_gt for g, _ in sizes.pairs)
    whole = unbucketed(sizes, num_gt, args.points.shape[0])
    gt_sizes = _sizes_up_to(num_gt, sizes.gt_start, listed, sizes, whole)
    return real_gts_first(gt_mask), gt_sizes, gt_mask.sum(axis=1).max()


def _column_ladder(
    num_anchors: int, limit: int | None, sizes: Sizes, num_gt: int
) -> tuple[int, ...]:
    """Column buckets up to ``limit`` (None: none), then ``num_anchors``: all anchors.
    Without column buckets, ``limit`` itself (if below ``num_anchors``)."""
    found = ()
    if limit is not None:
        listed = (c for _, c in sizes.pairs)
        whole = unbucketed(sizes, num_gt, num_anchors)
        found = _sizes_up_to(min(limit, num_anchors), sizes.column_start, listed, sizes, whole)
    return (*tuple(c for c in found if c < num_anchors), num_anchors)


def images_at_once(num_images: int, pairs_per_image: int, sizes: Sizes) -> int:
    """How many images' ``[M, K]`` problems (``pairs_per_image = M * K``) to build at
    once: all of them, except when their pairs exceed ``sizes.pairs_at_once`` (set on
    a CPU; then the largest divisor of the batch that fits, at least one image).

    XLA:CPU allocates a call's temporary buffers as one block, sized for its
    largest size bucket; above glibc's mmap threshold that block is mapped and
    zeroed afresh at every call. Taking the large buckets a few images at a time
    keeps it small (numbers in docs/performance_history.md). A single image
    with more pairs than the limit takes its gts in slices (`gt_slices`).
    """
    limit = _checked(sizes).pairs_at_once
    if limit is None:
        return num_images
    fits = max(1, limit // max(pairs_per_image, 1))
    return max(d for d in range(1, min(fits, num_images) + 1) if num_images % d == 0)


def gt_slices(num_gt: int, num_anchors: int, sizes: Sizes) -> int:
    """In how many slices to take one image's gts (`split_gts`): one, except when its
    ``num_gt * num_anchors`` pairs exceed ``sizes.pairs_at_once`` (a single image too
    large for `images_at_once`)."""
    limit = _checked(sizes).pairs_at_once
    if limit is None:
        return 1
    return max(1, min(num_gt, -(-num_gt * num_anchors // limit)))


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


def any_over_gts(
    fn: Callable[[Array, Array], Array], gt_boxes: Array, gt_mask: Array, sizes: Sizes
) -> Array:
    """``[B, A]``: an anchor mask ORed over gts, ``fn(gt_boxes, gt_mask)`` with
    ``gt_boxes [B, M, 4]`` and ``gt_mask [B, M]`` giving ``[B, M, A]`` (all False
    for a gt that ``gt_mask`` marks invalid).

    With more than ``sizes.gts_at_once`` gt slots (set on a CPU), the gts are taken
    in equal slices of at most that many (padded with invalid gts) in a loop.
    XLA:CPU splits a reduction over more than 32 elements into a windowed one,
    which stores the whole ``[B, M, A]`` mask first (see `images_at_once` for why
    temporaries' size matters); in slices the mask needs almost nothing.
    """
    num_gt = gt_mask.shape[1]
    limit = _checked(sizes).gts_at_once
    steps = 1 if limit is None else -(-num_gt // limit)
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
