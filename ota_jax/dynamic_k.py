"""Dynamic k: how many positive labels each gt supplies, and the matching that takes them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["dynamic_k", "dynamic_k_matching"]


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
    gts = jnp.broadcast_to(jnp.arange(num_gt, dtype=jnp.int32)[:, None], order.shape)
    times_chosen = jnp.zeros(num_anchors, jnp.int32).at[order].add(chosen.astype(jnp.int32))
    only_gt = jnp.full(num_anchors, -1, jnp.int32).at[order].max(jnp.where(chosen, gts, -1))
    cheapest_gt = jnp.argmax(jnp.where(gt_mask[:, None], scores, -jnp.inf), axis=0)
    gt_index = jnp.where(times_chosen > 1, cheapest_gt, only_gt)
    return jnp.where(times_chosen > 0, gt_index, -1).astype(jnp.int32)
