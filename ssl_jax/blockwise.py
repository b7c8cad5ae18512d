"""NT-Xent block by block: the plain loss's value and gradient in O(N * chunk) memory.

``losses.nt_xent(..., chunk_size=k)`` lands here. Anchors are scored against all candidates k rows
at a time; a custom VJP computes the gradient in the same pass over the blocks, so neither pass
holds the [2n, 2N] similarity matrix.
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
from jax import lax

# Finite in float32 and bfloat16 alike (1e9 overflows half precision); exp() of it is exactly 0.
MASK_VALUE = -1e4

# nt_xent's similarity matrix is [2n local anchors, 2N global candidates] float32, and the naive
# path keeps a few of them alive for the backward pass. Above this many entries (256 MiB each)
# ``auto_chunk_size`` switches to the blockwise path, whose largest temporary is
# [AUTO_CHUNK_SIZE, 2N].
AUTO_CHUNK_MIN_LOGITS = 2**26
AUTO_CHUNK_SIZE = 1024


def auto_chunk_size(num_anchors: int, num_candidates: int) -> int | None:
    """The ``nt_xent`` chunk size for 2n = ``num_anchors`` local anchors and 2N candidates.

    None (the plain path) while the [2n, 2N] similarity matrix has at most
    ``AUTO_CHUNK_MIN_LOGITS`` entries, else ``AUTO_CHUNK_SIZE``.

    >>> auto_chunk_size(512, 4096) is None, auto_chunk_size(32768, 32768)
    (True, 1024)
    """
    if num_anchors * num_candidates <= AUTO_CHUNK_MIN_LOGITS:
        return None
    return AUTO_CHUNK_SIZE


def positive_int(value: object, name: str) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise ValueError(f"{name} must be a positive integer (or None); got {value!r}.")
    return number


def nt_xent_mean(
    anchors: jax.Array,
    candidates: jax.Array,
    own_index: jax.Array,
    positive_index: jax.Array,
    temperature: float,
    chunk_size: int,
) -> jax.Array:
    """Mean NT-Xent of normalised ``anchors`` [m, d] over ``candidates`` [M, d], block by block."""
    num_anchors = anchors.shape[0]
    chunk_size = min(chunk_size, num_anchors)
    pad = -num_anchors % chunk_size
    # Padded anchors are zero vectors with weight 0: they add nothing to the value, and their
    # rows of the candidate gradient vanish with them.
    weights = jnp.pad(jnp.ones(num_anchors, jnp.float32), (0, pad))
    anchors = jnp.pad(anchors, ((0, pad), (0, 0)))
    own_index = jnp.pad(own_index, (0, pad), constant_values=-1)
    positive_index = jnp.pad(positive_index, (0, pad))
    total = _weighted_loss_sum(
        anchors, candidates, own_index, positive_index, weights, temperature, chunk_size
    )
    return total / num_anchors


def _blocks(x: jax.Array, chunk_size: int) -> jax.Array:
    return x.reshape(x.shape[0] // chunk_size, chunk_size, *x.shape[1:])


def _masked_logits(
    anchors: jax.Array, own_index: jax.Array, candidates: jax.Array, temperature: float
) -> jax.Array:
    logits = anchors @ candidates.T / temperature  # [chunk, M]
    columns = jnp.arange(candidates.shape[0])
    return jnp.where(columns[None, :] == own_index[:, None], MASK_VALUE, logits)


def _block_scan(anchors, candidates, own_index, positive_index, weights, temperature, chunk_size):
    """Each anchor's log-sum-exp [m] and, with the gradients, the loss's gradient wrt the logits
    contracted with candidates and anchors, one [chunk, M] block of logits at a time.

    Returns ``(log_normalizers, (anchor_grad [m, d], candidate_grad [M, d]))`` where the
    gradients are those of ``sum(weights * per-anchor loss)`` times ``temperature``.
    """

    def block(candidate_grad, inputs):
        anchor_block, own_block, positive_block, weight_block = inputs
        logits = _masked_logits(anchor_block, own_block, candidates, temperature)
        row_max = jnp.max(logits, axis=-1, keepdims=True)
        exps = jnp.exp(logits - row_max)
        row_sum = jnp.sum(exps, axis=-1, keepdims=True)
        log_normalizer = (row_max + jnp.log(row_sum))[:, 0]
        # d loss_i / d logit_ij = w_i * (softmax_ij - [j is i's positive]); logit = a . c / t.
        probs = exps * (weight_block[:, None] / row_sum)
        anchor_grad = probs @ candidates - weight_block[:, None] * candidates[positive_block]
        candidate_grad = candidate_grad + probs.T @ anchor_block
        return candidate_grad, (log_normalizer, anchor_grad)

    blocks = tuple(_blocks(x, chunk_size) for x in (anchors, own_index, positive_index, weights))
    candidate_grad, (log_normalizers, anchor_grad) = lax.scan(
        block, jnp.zeros_like(candidates), blocks
    )
    candidate_grad = candidate_grad.at[positive_index].add(-weights[:, None] * anchors)
    return log_normalizers.reshape(-1), (anchor_grad.reshape(anchors.shape), candidate_grad)


def _positive_logits(anchors, candidates, positive_index, temperature):
    return jnp.sum(anchors * candidates[positive_index], axis=-1) / temperature


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _weighted_loss_sum(
    anchors, candidates, own_index, positive_index, weights, temperature, chunk_size
):
    """sum_i weights_i * NT-Xent_i; undifferentiated, only the log-normalisers are computed."""

    def block(inputs):
        anchor_block, own_block = inputs
        logits = _masked_logits(anchor_block, own_block, candidates, temperature)
        return jax.nn.logsumexp(logits, axis=-1)

    blocks = (_blocks(anchors, chunk_size), _blocks(own_index, chunk_size))
    log_normalizers = lax.map(block, blocks).reshape(-1)
    positives = _positive_logits(anchors, candidates, positive_index, temperature)
    return jnp.sum(weights * (log_normalizers - positives))


def _weighted_loss_sum_fwd(
    anchors, candidates, own_index, positive_index, weights, temperature, chunk_size
):
    # The gradient is computed here, while each block's softmax is at hand: three block
    # matmuls in all (as many as the plain path's forward and backward), where rebuilding the
    # blocks in the backward pass would take four. The residuals are O((m + M) * d).
    log_normalizers, grads = _block_scan(
        anchors, candidates, own_index, positive_index, weights, temperature, chunk_size
    )
    positives = _positive_logits(anchors, candidates, positive_index, temperature)
    return jnp.sum(weights * (log_normalizers - positives)), grads


def _weighted_loss_sum_bwd(temperature, chunk_size, grads, loss_cotangent):
    del chunk_size
    anchor_grad, candidate_grad = grads
    scale = loss_cotangent / temperature
    return anchor_grad * scale, candidate_grad * scale, None, None, None


_weighted_loss_sum.defvjp(_weighted_loss_sum_fwd, _weighted_loss_sum_bwd)
