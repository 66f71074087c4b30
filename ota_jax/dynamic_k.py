"""Dynamic k: how many positive labels each gt supplies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["dynamic_k"]


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
