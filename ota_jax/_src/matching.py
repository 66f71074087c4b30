"""Dynamic k: how many positive labels each gt supplies, and the matching that takes them."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

__all__ = [
    "Votes",
    "dynamic_k",
    "dynamic_k_matching",
    "matching_votes",
    "merge_votes",
    "resolve_votes",
]


def dynamic_k(ious: Array, candidate_mask: Array, gt_mask: Array, *, topk: int) -> Array:
    """Per-gt label count ``k = max(1, int(sum of the top-q IoUs over its candidates))``.

    Args:
      ious: ``[M, A]`` IoU of each gt with each anchor's predicted box.
      candidate_mask: ``[M, A]`` or ``[A]`` bool, the anchors whose IoUs count.
      gt_mask: ``[M]`` bool, real (not padded) gts.
      topk: q, a static bound; ``min(q, A)`` IoUs are summed.

    Returns:
      ``[M]`` int32, at least 1 for real gts and 0 for padded ones.
    """
    num_anchors = ious.shape[-1]
    masked = jnp.where(candidate_mask, ious, 0.0)
    top_ious, _ = jax.lax.top_k(masked, min(topk, num_anchors))
    k = jnp.maximum(jnp.floor(top_ious.sum(axis=-1)), 1.0).astype(jnp.int32)
    return jnp.where(gt_mask, k, 0)


class Votes(NamedTuple):
    """What a set of gts chose in `dynamic_k_matching`, per anchor (``[A]`` each).
    Votes of disjoint gt slices combine with `merge_votes`."""

    times_chosen: Array  # int32: how many gts took the anchor
    last_chooser: Array  # int32: the highest gt index that took it, -1 for none
    best_score: Array  # float32: max over real gts of -cost (-inf off the anchor mask)
    cheapest_gt: Array  # int32: the first gt with that score


def dynamic_k_matching(
    cost: Array, k: Array, anchor_mask: Array, gt_mask: Array, *, topk: int
) -> Array:
    """Each gt takes its ``k`` cheapest anchors; an anchor taken by several gts goes to the
    gt of lowest cost for it over all real gts (YOLOX's ``simota_matching``, mmdet's
    ``dynamic_k_matching``).

    ``k <= topk``, so one static ``lax.top_k`` of ``topk`` and a rank mask replace the
    reference's per-gt top-k with a dynamic k; equal costs take the lower anchor first.

    Args:
      cost: ``[M, A]`` finite cost of each gt for each anchor.
      k: ``[M]`` int labels each gt takes, at most ``topk`` (0 for padded gts).
      anchor_mask: ``[A]`` bool, the anchors that may be taken at all.
      gt_mask: ``[M]`` bool, real gts (the only ones that compete for an anchor).
      topk: the static bound on ``k``.

    Returns:
      ``[A]`` int32 gt of each anchor, -1 for background.
    """
    return resolve_votes(matching_votes(cost, k, anchor_mask, gt_mask, topk=topk))


def matching_votes(
    cost: Array,
    k: Array,
    anchor_mask: Array,
    gt_mask: Array,
    *,
    topk: int,
    first_gt: Array | int = 0,
) -> Votes:
    """The `Votes` of gts ``first_gt ... first_gt + M - 1`` (arguments as for
    `dynamic_k_matching`): each gt's choices depend on its own row only."""
    num_gt, num_anchors = cost.shape
    # The top-k and the conflicts' argmin (an argmax here) read the same scores:
    # conflicts only concern anchors in the mask, where the scores are -cost.
    scores = jnp.where(anchor_mask, -cost, -jnp.inf)
    _, order = jax.lax.top_k(scores, min(topk, num_anchors))
    ranks = jnp.arange(order.shape[1])
    chosen = (ranks[None, :] < k[:, None]) & anchor_mask[order]

    # Count and name the choosers from the M * topk choices, not an [M, A] matching
    # matrix: a row's top-k indices are distinct, and the one chooser of an anchor
    # chosen once is the max over its choices (-1 where not chosen).
    gts = first_gt + jnp.broadcast_to(jnp.arange(num_gt, dtype=jnp.int32)[:, None], order.shape)
    times_chosen = jnp.zeros(num_anchors, jnp.int32).at[order].add(chosen.astype(jnp.int32))
    last_chooser = jnp.full(num_anchors, -1, jnp.int32).at[order].max(jnp.where(chosen, gts, -1))
    gt_scores = jnp.where(gt_mask[:, None], scores, -jnp.inf)
    cheapest = jnp.argmax(gt_scores, axis=0)
    best_score = jnp.take_along_axis(gt_scores, cheapest[None, :], axis=0)[0]
    return Votes(times_chosen, last_chooser, best_score, (first_gt + cheapest).astype(jnp.int32))


def merge_votes(first: Votes, later: Votes) -> Votes:
    """The `Votes` of two gt slices together, ``later``'s gts after ``first``'s."""
    later_wins = later.best_score > first.best_score  # a tie keeps the first gt, as argmax
    return Votes(
        first.times_chosen + later.times_chosen,
        jnp.maximum(first.last_chooser, later.last_chooser),
        jnp.maximum(first.best_score, later.best_score),
        jnp.where(later_wins, later.cheapest_gt, first.cheapest_gt),
    )


def resolve_votes(votes: Votes) -> Array:
    """``[A]`` int32 gt of each anchor: its one chooser, the cheapest gt when several
    chose it, -1 when none did."""
    gt_index = jnp.where(votes.times_chosen > 1, votes.cheapest_gt, votes.last_chooser)
    return jnp.where(votes.times_chosen > 0, gt_index, -1).astype(jnp.int32)
