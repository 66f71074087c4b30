"""Pairwise classification costs, without ever building an ``[M, A, C]`` tensor.

For any per-class loss ``l(x, t)`` summed over C classes against a one-hot
target of class ``g``::

    sum_c l(x_c, onehot_c) = sum_c l(x_c, 0) - l(x_g, 0) + l(x_g, 1)

The first term depends only on the anchor (for OTA it is the background row
itself); the rest needs one gather per gt. Cost: ``O(A*C + M*A)`` time and memory
instead of the reference loops' ``O(M*A*C)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

__all__ = [
    "bce_background_cost",
    "bce_class_cost",
    "focal_class_cost",
    "focal_loss_negative",
    "focal_loss_positive",
    "focal_relative_cost",
    "joint_logits",
    "joint_scores",
]


def _gather_classes(per_class: Array, labels: Array) -> Array:
    """``per_class [A, C]`` at each gt's class: ``[M, A]``."""
    # Rows of the transpose, not columns transposed: XLA:CPU then computes the cost
    # on [M, A] with anchors innermost instead of element by element on a trailing
    # axis of one (measured in docs/performance_history.md).
    return jnp.take(per_class.T, labels, axis=0, mode="clip")


def _power(x: Array, exponent: float) -> Array:
    # An integral exponent (gamma = 2) becomes multiplications, not exp(log(x) * y).
    return x ** int(exponent) if float(exponent).is_integer() else x**exponent


def _sigmoid_and_softplus(logits: Array) -> tuple[Array, Array, Array]:
    """``sigmoid(x)``, ``softplus(x) = -log(1 - sigmoid(x))`` and ``softplus(-x)``,
    stable for any finite x, from a single exp."""
    e = jnp.exp(-jnp.abs(logits))
    log1p_e = jnp.log1p(e)
    probs = jnp.where(logits >= 0, 1.0, e) / (1.0 + e)
    return probs, jnp.maximum(logits, 0.0) + log1p_e, jnp.maximum(-logits, 0.0) + log1p_e


def focal_loss_negative(logits: Array, *, alpha: float, gamma: float) -> Array:
    """Sigmoid focal loss against target 0: ``(1 - alpha) * p^gamma * -log(1 - p)``."""
    probs, neg_log_complement, _ = _sigmoid_and_softplus(logits)
    return (1.0 - alpha) * _power(probs, gamma) * neg_log_complement


def focal_loss_positive(logits: Array, *, alpha: float, gamma: float) -> Array:
    """Sigmoid focal loss against target 1: ``alpha * (1 - p)^gamma * -log(p)``."""
    probs, _, neg_log_prob = _sigmoid_and_softplus(logits)
    return alpha * _power(1.0 - probs, gamma) * neg_log_prob


def focal_class_cost(
    cls_logits: Array, gt_labels: Array, *, alpha: float, gamma: float
) -> tuple[Array, Array]:
    """Sigmoid focal loss of every anchor against every gt's one-hot label (OTA).

    The terms are ``optax.sigmoid_focal_loss`` with its target fixed at 0 or 1,
    written out: the background term runs over all ``A * C`` logits and dominates
    the cost of building the problem, and the generic form spends three times the
    transcendental functions on it. (Tests check both against optax.)

    Args:
      cls_logits: ``[A, C]`` float32 class logits.
      gt_labels: ``[M]`` int class of each gt, in ``[0, C)``.
      alpha, gamma: focal loss parameters (OTA: 0.25, 2.0).

    Returns:
      ``pair_cost [M, A]``: focal loss summed over classes against gt ``m``'s
      one-hot label; ``background_cost [A]``: the same against all-zero targets.
    """
    background_cost = focal_loss_negative(cls_logits, alpha=alpha, gamma=gamma).sum(axis=-1)
    gt_logits = _gather_classes(cls_logits, gt_labels)
    relative = focal_relative_cost(gt_logits, alpha=alpha, gamma=gamma)
    return background_cost[None, :] + relative, background_cost


def focal_relative_cost(gt_logits: Array, *, alpha: float, gamma: float) -> Array:
    """What a one-hot target adds to the all-zero (background) focal cost: the pair
    cost of `focal_class_cost` minus its background cost, from the logits at the
    gts' classes alone (``[M, A]`` in, ``[M, A]`` out)."""
    return focal_loss_positive(gt_logits, alpha=alpha, gamma=gamma) - focal_loss_negative(
        gt_logits, alpha=alpha, gamma=gamma
    )


def bce_class_cost(
    cls_logits: Array,
    obj_logits: Array | None,
    gt_labels: Array,
    *,
    background: Array | None = None,
) -> Array:
    """Binary cross-entropy of the class scores (`joint_scores`) against each gt's
    one-hot label (YOLOX).

    Args:
      cls_logits: ``[A, C]`` class logits.
      obj_logits: ``[A]`` objectness logits, or None.
      gt_labels: ``[M]`` int class of each gt.
      background: ``[A]`` `bce_background_cost` of the same logits, where the caller
        already has it (SimOTA takes a large image's gts in slices and sums the
        classes once); computed here otherwise.

    Returns:
      ``[M, A]`` BCE summed over classes. The logs are clamped at -100 as
      ``torch.nn.functional.binary_cross_entropy`` does, which YOLOX's cost uses;
      optax's BCE takes logits, and the YOLOX score is a geometric mean of two
      sigmoids, so this one is written out to reproduce YOLOX exactly. The scores
      at the gts' classes are recomputed from their gathered logits, so that the
      ``[A, C]`` scores are only ever summed (one fused pass, never stored).
    """
    if background is None:
        background = bce_background_cost(cls_logits, obj_logits)
    gt_logits = _gather_classes(cls_logits, gt_labels)
    gt_scores = joint_scores(gt_logits.T, obj_logits).T
    return background[None, :] - _bce_negative(gt_scores) + _bce_positive(gt_scores)


def bce_background_cost(cls_logits: Array, obj_logits: Array | None) -> Array:
    """``[A]`` binary cross-entropy of the class scores against all-zero targets,
    summed over the classes: the part of `bce_class_cost` that no gt changes."""
    return _bce_negative(joint_scores(cls_logits, obj_logits)).sum(axis=-1)


def _bce_negative(probs: Array) -> Array:
    """``-log(1 - p)``, clamped at 100 as ``torch.nn.functional.binary_cross_entropy``."""
    return -jnp.maximum(jnp.log1p(-probs), -100.0)


def _bce_positive(probs: Array) -> Array:
    """``-log(p)``, clamped at 100 likewise."""
    return -jnp.maximum(jnp.log(probs), -100.0)


def joint_scores(cls_logits: Array, obj_logits: Array | None) -> Array:
    """``[A, C]`` class probabilities: ``sigmoid(cls)``, or with objectness YOLOX's
    ``sqrt(sigmoid(cls) * sigmoid(obj))``."""
    scores = jax.nn.sigmoid(cls_logits)
    if obj_logits is None:
        return scores
    return jnp.sqrt(scores * jax.nn.sigmoid(obj_logits)[:, None])


def joint_logits(cls_logits: Array, obj_logits: Array | None) -> Array:
    """``[A, C]`` logits of `joint_scores`, computed in log space so they stay finite."""
    if obj_logits is None:
        return cls_logits
    log_score = 0.5 * (jax.nn.log_sigmoid(cls_logits) + jax.nn.log_sigmoid(obj_logits)[:, None])
    # log(1 - p) from log p without cancellation.
    log_complement = jnp.log(-jnp.expm1(jnp.minimum(log_score, -1e-7)))
    return log_score - log_complement
