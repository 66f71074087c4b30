"""Fusion control for XLA:CPU, where its fusion choices cost the assigners most.

XLA fuses an elementwise producer into every consumer that reads it, and a
reduction into its elementwise consumer. On a GPU that is what one wants. On a
CPU the assigners' producers are expensive (logs, square roots, divisions over
``[M, K]`` pairs or ``[K, C]`` classes) and their consumers many or broadcast:
the work is repeated, or runs in a slower loop than it would alone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["own_buffer"]


def own_buffer(x: Array) -> Array:
    """``x``, computed once into a buffer of its own on a CPU (unchanged elsewhere).

    ``lax.optimization_barrier`` would say this, but XLA:CPU removes barriers
    before it fuses; an identity gather along the last axis is the cheapest op it
    does not fuse through (one copy of ``x``).
    """
    if jax.default_backend() != "cpu":
        return x
    return jnp.take(x, jnp.arange(x.shape[-1]), axis=-1)
