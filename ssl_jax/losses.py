"""Self-supervised losses, written per device so they run unchanged under jit, shard_map and pmap.

With an ``axis_name`` the loss sees the embeddings of every device and equals the one-device loss
on the global batch.
"""

from __future__ import annotations

from collections.abc import Hashable

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

# Finite in float32 and bfloat16 alike (1e9 overflows half precision); exp() of it is exactly 0.
_MASK_VALUE = -1e4


def l2_normalize(x: ArrayLike, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """Scales ``x`` to unit L2 norm along ``axis`` (zero vectors stay zero)."""
    x = jnp.asarray(x)
    squared_norm = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return x * lax.rsqrt(jnp.maximum(squared_norm, eps * eps))


def global_mean(local_mean: ArrayLike, axis_name: Hashable | None) -> jax.Array:
    """The mean over devices of equally sized per-device means, with a collective-free gradient.

    The value is ``pmean(local_mean)`` on every device. The gradient is that of
    ``local_mean / axis_size``: this device's share of the global objective, so summing
    parameter gradients over devices (``psum``) yields the global gradient. Keeping collectives
    off the gradient path makes the result the same under shard_map and pmap, whose transposes of
    ``psum`` differ.
    """
    local_mean = jnp.asarray(local_mean)
    if axis_name is None:
        return local_mean
    share = local_mean / lax.axis_size(axis_name)
    return share + lax.stop_gradient(lax.psum(share, axis_name) - share)


def nt_xent(
    z1: ArrayLike,
    z2: ArrayLike,
    *,
    temperature: float = 0.5,
    axis_name: Hashable | None = None,
) -> jax.Array:
    """Normalised-temperature cross entropy (SimCLR's contrastive loss).

    Each of the 2N embeddings is an anchor; its positive is the other view of the same image and
    its negatives are the remaining 2N - 2 embeddings. The loss is the mean over all 2N anchors.

    Args:
      z1: [n, d] embeddings of the first view on this device (need not be normalised).
      z2: [n, d] embeddings of the second view, row i pairing with row i of ``z1``.
      temperature: softmax temperature, > 0.
      axis_name: mapped axis (shard_map / pmap) over which the batch is split. The embeddings of
        all devices are gathered, each device scores its own 2n anchors against the 2N global
        candidates, and the per-device means are averaged, so the result (and its gradient,
        through the gather's transpose) equals the one-device loss on the global batch.

    Returns:
      A float32 scalar, the same on every device.

    Raises:
      ValueError: if the shapes differ, are not rank 2, or ``temperature`` <= 0.

    >>> import jax.numpy as jnp
    >>> z = jnp.eye(4)
    >>> float(nt_xent(z, z, temperature=0.1)) < 1e-3  # identical views, orthogonal negatives
    True

    References:
      Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
      ICML 2020 (arXiv:2002.05709), eq. 1.
    """
    z1 = jnp.asarray(z1)
    z2 = jnp.asarray(z2)
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"nt_xent expects z1 and z2 of the same shape [n, d]; got {z1.shape} and {z2.shape}."
        )
    if not temperature > 0:
        raise ValueError(f"nt_xent temperature must be > 0; got {temperature}.")

    n = z1.shape[0]
    local = l2_normalize(jnp.concatenate([z1, z2], axis=0).astype(jnp.float32))  # [2n, d]
    if axis_name is None:
        z1_all, z2_all, offset = local[:n], local[n:], 0
    else:
        z1_all = lax.all_gather(local[:n], axis_name, tiled=True)  # [N, d]
        z2_all = lax.all_gather(local[n:], axis_name, tiled=True)
        offset = lax.axis_index(axis_name) * n
    candidates = jnp.concatenate([z1_all, z2_all], axis=0)  # [2N, d], global order
    global_n = z1_all.shape[0]

    logits = local @ candidates.T / temperature  # [2n, 2N]
    rows = jnp.arange(2 * n)
    own_index = jnp.where(rows < n, rows + offset, rows - n + offset + global_n)
    positive_index = jnp.where(rows < n, own_index + global_n, own_index - global_n)
    columns = jnp.arange(2 * global_n)
    logits = jnp.where(columns[None, :] == own_index[:, None], _MASK_VALUE, logits)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    loss = -jnp.mean(jnp.take_along_axis(log_probs, positive_index[:, None], axis=1))
    return global_mean(loss, axis_name)
