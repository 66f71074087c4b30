"""Exact candidate compaction: solve OTA's transport on the anchors that matter.

An anchor that is no gt's candidate costs every gt with candidates the penalty
(its plan entry there is exactly 0 in float32), so only the background ships to
it. Such anchors leave the matrix; their total demand goes to one extra column
that only the background row reaches. That is exact, iterate for iterate: in
every column update each folded anchor's background entry is set to the same
value, so one column of demand ``n`` stands for all ``n`` of them.

Gts without any candidate (boxes smaller than the stride) are the exception: in
the dense problem they ship to their cheapest anchors relative to the
background. Their ``extra_columns`` cheapest anchors stay in the matrix; their
plan mass beyond those is what the compacted problem drops (it is
``exp(-cost_gap / epsilon)`` small, far below what decides an assignment).

The kept anchors are gathered into a static number of columns (`kept_columns`)
and the caller builds its problem on those anchors only: the class cost's
background term sums over every class, and on all anchors it was most of OTA's
work. The solved plan stays compact too (`per_anchor_plan`: the kept columns
and one folded anchor are all that decoding needs); `expand_plan` makes it
dense for whoever wants to look at it. When an image needs more columns, the
caller uses a larger size bucket or the dense problem (`ota_jax.buckets`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array
from jax.sharding import PartitionSpec as P

from ota_jax.transport import Transport, solve_transport

__all__ = [
    "expand_plan",
    "kept_columns",
    "needed_columns",
    "per_anchor_plan",
    "smallest_in_chunks",
    "smallest_indices",
    "solve_compacted",
    "take_rows",
    "true_indices",
]

# Cost of the folded column for the gt rows: exp(-_UNREACHABLE / epsilon) is 0.
_UNREACHABLE = 1e8

# Bits per word of `true_indices`' packed mask.
_WORD = 32


def true_indices(mask: Array, size: int, fill_value: int, skip: Array | int = 0) -> Array:
    """``jnp.nonzero(mask, size=size, fill_value=fill_value)[0]``, faster on a CPU.

    Args:
      mask: ``[A]`` bool.
      size: static number of indices returned.
      fill_value: the index after the last True one.
      skip: how many True entries to pass over first (may be traced).

    Returns:
      ``[size]`` int32: the positions of the True entries of rank ``skip`` to
      ``skip + size - 1``, ascending, then ``fill_value``.

    ``jnp.nonzero`` counts the True entries with a cumsum over all ``A`` and scatters
    each to its count; XLA:CPU runs both as slow loops (docs/performance_history.md).
    Here the mask is packed into 32-bit words,
    the cumsum runs over the ``A / 32`` word popcounts, and each of the ``size``
    outputs finds its word by binary search and its bit by five popcounts: the only
    pass over all ``A`` entries is the packing.
    """
    num = mask.shape[0]
    num_words = -(-num // _WORD)
    bits = jnp.pad(mask, (0, num_words * _WORD - num)).reshape(num_words, _WORD)
    one = jnp.uint32(1)
    powers = jnp.left_shift(one, jnp.arange(_WORD, dtype=jnp.uint32))
    words = jnp.where(bits, powers, jnp.uint32(0)).sum(axis=1, dtype=jnp.uint32)
    counts = jax.lax.population_count(words).astype(jnp.int32)
    through = jnp.cumsum(counts)  # True entries up to and including each word
    rank = skip + jnp.arange(size, dtype=jnp.int32)  # output k: the True entry of rank k
    word_index = _count_below(through, rank + 1)
    found = word_index < num_words
    word_index = jnp.minimum(word_index, num_words - 1)
    rank_in_word = rank - (through[word_index] - counts[word_index])
    word = words[word_index]
    # The highest bit with at most rank_in_word True bits below it is the one.
    bit = jnp.zeros((size,), jnp.uint32)
    for step in (16, 8, 4, 2, 1):
        below = jax.lax.population_count(word & (jnp.left_shift(one, bit + step) - one))
        bit = jnp.where(below.astype(jnp.int32) <= rank_in_word, bit + step, bit)
    return jnp.where(found, word_index * _WORD + bit.astype(jnp.int32), fill_value)


def _count_below(ascending: Array, query: Array) -> Array:
    """``[Q]`` int32: how many entries of ``ascending [N]`` (int32) are below each
    ``query [Q]`` (below int32's max): ``jnp.searchsorted(ascending, query)``."""
    # Not searchsorted: JAX 0.10 can't vmap its scan over an Explicit-sharded batch axis.
    size = (1 << ascending.shape[0].bit_length()) - 1  # 2^k - 1: every probe in range
    top = jnp.iinfo(jnp.int32).max
    ascending = jnp.pad(ascending, (0, size - ascending.shape[0]), constant_values=top)
    count = jnp.zeros(query.shape, jnp.int32)
    step = (size + 1) // 2
    while step:  # binary search: add each power of two that keeps the count below
        probe = count + step
        count = jnp.where(ascending[probe - 1] < query, probe, count)
        step //= 2
    return count


def take_rows(x: Array, index: Array, mode: str | None = None) -> Array:
    """``x[index]`` (``mode`` as for ``jnp.take``): the rows ``index [K]`` of ``x [A, ...]``,
    also where ``x`` is shared by every image of a vmap (the anchor points and strides) and
    ``index`` is per image."""
    sharding = jax.typeof(index).sharding
    # On an Explicit mesh JAX won't infer a gather's sharding from a replicated x and
    # batch-sharded indices (vmap adds the batch axis to this per-image P()): we say it.
    out_sharding = sharding.update(spec=P()) if sharding.mesh.explicit_axes else None
    return x.at[index].get(mode=mode, out_sharding=out_sharding)


# Anchors per chunk of `smallest_indices`' first stage on an accelerator.
_TOP_K_CHUNK = 256


def smallest_indices(values: Array, k: int) -> Array:
    """``[..., k]`` int32: the positions of the ``k`` smallest of ``values [..., A]``
    (no NaN; ``k <= A``), ascending by value, ties to the lower position (as
    ``lax.top_k(-values, k)``).

    On an accelerator in two exact stages (`smallest_in_chunks`). XLA's GPU top-k
    kernel gives each row to one thread block, so the few long rows of OTA's
    search for candidate-less gts' anchors (``[B, 4, A]``) leave the device idle;
    short rows fill it (docs/performance_history.md). On a CPU the two stages are
    slower than one ``lax.top_k``, which it keeps.
    """
    num = values.shape[-1]
    if num < 2 * _TOP_K_CHUNK or k > _TOP_K_CHUNK:
        return jax.lax.top_k(-values, k)[1]
    return jax.lax.platform_dependent(
        values,
        cpu=lambda v: jax.lax.top_k(-v, k)[1],
        default=lambda v: smallest_in_chunks(v, k, _TOP_K_CHUNK),
    )


def smallest_in_chunks(values: Array, k: int, chunk: int) -> Array:
    """`smallest_indices` in two stages: the ``k`` smallest of each ``chunk`` positions
    (``k <= chunk``), then the ``k`` smallest of those. Exact, ties included: both
    stages prefer lower positions, and the second sees the chunks in order."""
    num = values.shape[-1]
    chunks = -(-num // chunk)
    lead = values.shape[:-1]
    padded = jnp.pad(
        values, [(0, 0)] * len(lead) + [(0, chunks * chunk - num)], constant_values=jnp.inf
    )
    best, index = jax.lax.top_k(-padded.reshape(*lead, chunks, chunk), k)
    index = index + chunk * jnp.arange(chunks, dtype=index.dtype)[:, None]
    _, pick = jax.lax.top_k(best.reshape(*lead, chunks * k), k)
    return jnp.take_along_axis(index.reshape(*lead, chunks * k), pick, axis=-1)


def needed_columns(candidates: Array, relative_cost: Array, gt_mask: Array, *, extra: int) -> Array:
    """``[A]`` bool: the anchors a compacted OTA problem must keep.

    Args:
      candidates: ``[M, A]`` bool candidate pairs (real gts only).
      relative_cost: ``[M, A]`` cost of each gt minus the background's, on each anchor
        (any per-row shift is fine).
      gt_mask: ``[M]`` bool real gts.
      extra: static count of cheapest anchors kept for each gt without candidates.
    """
    needed = candidates.any(axis=0)
    num_gt, num_anchors = relative_cost.shape
    if num_gt == 0 or extra == 0:
        return needed
    candidate_less = gt_mask & ~candidates.any(axis=1)
    cheapest = smallest_indices(relative_cost, min(extra, num_anchors))
    keep = jnp.broadcast_to(candidate_less[:, None], cheapest.shape)
    return needed.at[cheapest.reshape(-1)].max(keep.reshape(-1))


def kept_columns(needed: Array, max_columns: int) -> tuple[Array, Array]:
    """The ``needed [A]`` anchors as ``max_columns`` static columns: ``index [K]``
    (ascending, padded with anchor 0) and ``valid [K]`` (False: padding). At most
    ``max_columns`` may be needed: callers pick the size from the count (a
    column bucket of `ota_jax.buckets`)."""
    index = true_indices(needed, max_columns, 0)
    return index, jnp.arange(max_columns) < needed.sum()


def solve_compacted(
    cost: Array,
    supply: Array,
    index: Array,
    valid: Array,
    num_anchors: int,
    *,
    epsilon: float,
    num_iters: int,
    row_offset: Array | None = None,
) -> Transport:
    """`solve_transport` on the kept columns plus one folded background column.

    Args:
      cost: ``[N, K]`` cost of the kept anchors ``index``, background last.
      supply: ``[N]`` row marginals; every anchor demands 1.
      index, valid: ``[K]`` from `kept_columns`; padding columns demand nothing.
      num_anchors: A, all anchors; the ``A - valid.sum()`` others are folded.
      epsilon, num_iters, row_offset: as for `solve_transport`.

    Returns:
      The compacted problem's `Transport`: ``plan``, ``cost`` ``[N, K + 1]`` and
      ``demand`` ``[K + 1]``, the folded column last, and its marginal errors.
      `per_anchor_plan` and `expand_plan` turn the plan into dense plan entries.
    """
    num_rows = cost.shape[0]
    num_folded = (num_anchors - valid.sum()).astype(jnp.float32)
    folded_cost = jnp.full((num_rows, 1), _UNREACHABLE).at[-1].set(0.0)
    demand = jnp.concatenate([valid.astype(jnp.float32), num_folded[None]])
    return solve_transport(
        jnp.concatenate([cost, folded_cost], axis=1),
        supply,
        demand,
        epsilon=epsilon,
        num_iters=num_iters,
        row_offset=row_offset,
    )


def per_anchor_plan(plan: Array, valid: Array, num_anchors: int) -> Array:
    """``[N, K + 1]``: the compacted ``plan`` as entries of the dense plan. Kept
    column k is anchor ``index[k]``'s column (zero for padding); the last column
    is that of any one folded anchor: the background's share of the folded
    column, nothing from a gt."""
    num_kept = valid.shape[0]
    num_folded = (num_anchors - valid.sum()).astype(jnp.float32)
    kept = jnp.where(valid[None, :], plan[:, :num_kept], 0.0)
    folded = jnp.zeros(plan.shape[0]).at[-1].set(plan[-1, -1] / jnp.maximum(num_folded, 1.0))
    return jnp.concatenate([kept, folded[:, None]], axis=1)


def expand_plan(per_anchor: Array, index: Array, valid: Array, num_anchors: int) -> Array:
    """``[N, A]``, the dense plan from `per_anchor_plan`'s ``[N, K + 1]``: kept
    columns at their anchors, the folded column at every other anchor."""
    at = jnp.where(valid, index, num_anchors)  # padding columns go nowhere
    folded = jnp.broadcast_to(per_anchor[:, -1:], (per_anchor.shape[0], num_anchors))
    return folded.at[:, at].set(per_anchor[:, :-1], mode="drop")
