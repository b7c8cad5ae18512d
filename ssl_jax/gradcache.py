"""Gradient caching: a model applied to a large batch one chunk at a time, forward and backward.

Only one chunk's activations are alive at once, so a contrastive loss over the whole batch trains
with exact gradients on a device that holds the activations of a chunk only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax import lax


def chunked_apply(
    fn: Callable[[Any, Any], Any], params: Any, inputs: Any, *, chunk_size: int
) -> Any:
    """``fn(params, chunk)`` over consecutive ``chunk_size`` slices of ``inputs``, outputs stacked.

    Under differentiation the forward pass keeps only ``params`` and ``inputs``: the backward
    pass receives the loss's gradient with respect to every chunk's outputs (the embeddings of
    the whole batch), then runs each chunk's forward pass again and its VJP, summing the
    parameter gradients chunk after chunk. The gradient is the one of applying ``fn`` to each
    chunk without chunking (``jax.vmap`` over ``[B // chunk_size, chunk_size, ...]``), at the
    cost of a second forward pass; memory holds one chunk's activations. Whatever ``fn``
    computes from the whole chunk (BatchNorm statistics) is per chunk.

    Args:
      fn: ``(params, chunk) -> outputs``, a pure function of a pytree of [chunk_size, ...]
        arrays; outputs are any pytree of arrays.
      params: what gradients are taken with respect to (closed-over values work as well).
      inputs: pytree of [B, ...] arrays, split along the leading axis.
      chunk_size: examples per chunk; must divide B.

    Returns:
      ``fn``'s outputs for every chunk, stacked: each leaf is [B // chunk_size, *leaf.shape].

    Raises:
      ValueError: if ``chunk_size`` is not a positive divisor of the leading axis of
        ``inputs``, or the leaves of ``inputs`` disagree on it.

    >>> import jax.numpy as jnp
    >>> x = jnp.arange(6.0)
    >>> f = lambda w, chunk: jnp.sum(w * chunk)
    >>> chunked_apply(f, 2.0, x, chunk_size=2)  # 2 * (0 + 1), 2 * (2 + 3), 2 * (4 + 5)
    Array([ 2., 10., 18.], dtype=float32)
    >>> jax.grad(lambda w: jnp.sum(chunked_apply(f, w, x, chunk_size=3)))(2.0)
    Array(15., dtype=float32, weak_type=True)

    References:
      Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup",
      RepL4NLP 2021 (arXiv:2101.06983), section 3.
    """
    sizes = {leaf.shape[0] for leaf in jax.tree.leaves(inputs)}
    if len(sizes) != 1:
        raise ValueError(f"chunked_apply inputs disagree on the batch size: {sorted(sizes)}.")
    (batch_size,) = sizes
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(
            f"chunked_apply chunk_size must be a positive integer; got {chunk_size!r}."
        )
    if batch_size % chunk_size:
        raise ValueError(
            f"chunked_apply chunk_size={chunk_size} must divide the batch of {batch_size}."
        )
    chunks = jax.tree.map(
        lambda x: x.reshape(batch_size // chunk_size, chunk_size, *x.shape[1:]), inputs
    )
    # Rematerialised inside the loop: the loop's backward pass re-runs each chunk's forward
    # pass right before its VJP instead of storing activations for all chunks. The parameters
    # are loop-invariant residuals, which JAX keeps once rather than once per chunk.
    chunk_fn = jax.checkpoint(fn, prevent_cse=False)
    return lax.map(lambda chunk: chunk_fn(params, chunk), chunks)


def merge_chunks(stacked: Any) -> Any:
    """Undoes the chunking of ``chunked_apply``'s outputs: [k, c, ...] leaves -> [k * c, ...]."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), stacked)
