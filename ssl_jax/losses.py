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

from ssl_jax import blockwise
from ssl_jax.blockwise import AUTO_CHUNK_MIN_LOGITS, AUTO_CHUNK_SIZE, auto_chunk_size

__all__ = [
    "AUTO_CHUNK_MIN_LOGITS",
    "AUTO_CHUNK_SIZE",
    "auto_chunk_size",
    "info_nce",
    "l2_normalize",
    "mean_over_devices",
    "mlm_loss",
    "nt_xent",
]


def l2_normalize(x: ArrayLike, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """Scales ``x`` to unit L2 norm along ``axis`` (zero vectors stay zero)."""
    x = jnp.asarray(x)
    squared_norm = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return x * lax.rsqrt(jnp.maximum(squared_norm, eps * eps))


def mean_over_devices(local_mean: ArrayLike, axis_name: Hashable | None) -> jax.Array:
    """The mean over devices of equally sized per-device means: ``pmean``, or the value itself.

    Its gradient is the gradient of its value. Under ``jax.shard_map`` with replication checking
    (``check_vma=True``, the default) the result is typed replicated, so ``jax.grad`` taken inside
    or outside the shard_map gives the one-device gradient of the global objective, and JAX sums
    the gradients of replicated parameters itself. Under ``jax.pmap``, whose ``psum`` transposes
    to ``psum``, each device's gradient of a replicated parameter is ``axis_size`` times its
    share, so the mean of those gradients over devices is the global gradient.
    """
    local_mean = jnp.asarray(local_mean)
    return local_mean if axis_name is None else lax.pmean(local_mean, axis_name)


def nt_xent(
    z1: ArrayLike,
    z2: ArrayLike,
    *,
    temperature: float = 0.5,
    axis_name: Hashable | None = None,
    chunk_size: int | None = None,
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
        candidates, and the per-device means are averaged (``mean_over_devices``), so the
        result and its gradient, through the gather's transpose, equal the one-device loss on
        the global batch.
      chunk_size: None for the plain computation, which holds the whole [2n, 2N] similarity
        matrix; or the number of anchors scored per block. Blocks of [chunk_size, 2N]
        similarities are computed one after another in the forward pass and again in the
        backward pass, so memory is O(N * chunk_size) instead of O(N^2) for the same value and
        gradient (up to float32 rounding). The last block is padded when ``chunk_size`` does not
        divide 2n; a ``chunk_size`` >= 2n is one block. ``auto_chunk_size`` picks one by size.

    Returns:
      A float32 scalar, the same on every device.

    Raises:
      ValueError: if the shapes differ, are not rank 2, ``temperature`` <= 0, or
        ``chunk_size`` is not a positive integer or None.

    >>> import jax.numpy as jnp
    >>> z = jnp.eye(4)
    >>> float(nt_xent(z, z, temperature=0.1)) < 1e-3  # identical views, orthogonal negatives
    True
    >>> z1 = jnp.arange(12.0).reshape(4, 3)
    >>> z2 = jnp.cos(z1)
    >>> naive = nt_xent(z1, z2, temperature=0.5)
    >>> bool(jnp.allclose(nt_xent(z1, z2, temperature=0.5, chunk_size=3), naive))
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
    if chunk_size is not None:
        chunk_size = blockwise.positive_int(chunk_size, "nt_xent chunk_size")

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

    rows = jnp.arange(2 * n)
    own_index = jnp.where(rows < n, rows + offset, rows - n + offset + global_n)
    positive_index = jnp.where(rows < n, own_index + global_n, own_index - global_n)
    if chunk_size is not None:
        loss = blockwise.nt_xent_mean(
            local, candidates, own_index, positive_index, temperature, chunk_size
        )
        return mean_over_devices(loss, axis_name)

    logits = local @ candidates.T / temperature  # [2n, 2N]
    columns = jnp.arange(2 * global_n)
    logits = jnp.where(columns[None, :] == own_index[:, None], blockwise.MASK_VALUE, logits)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    loss = -jnp.mean(jnp.take_along_axis(log_probs, positive_index[:, None], axis=1))
    return mean_over_devices(loss, axis_name)


def info_nce(
    q: ArrayLike,
    k: ArrayLike,
    queue: ArrayLike | None = None,
    *,
    temperature: float = 0.2,
    axis_name: Hashable | None = None,
) -> jax.Array:
    """InfoNCE of queries against their positive keys and a set of negatives (MoCo's loss).

    With ``queue`` (MoCo v2) the negatives of every query are the K queued keys. Without it
    (MoCo v3) the candidates are the keys of the whole batch: with ``axis_name`` the keys of all
    devices are gathered, and query i's positive is its own key among them.

    Args:
      q: [n, d] queries on this device (normalised here).
      k: [n, d] positive keys, row i pairing with query i (normalised here). Gradients flow into
        ``k`` as into ``q``: MoCo passes keys from its momentum encoder under stop_gradient.
      queue: optional [K, d] negatives (normalised here).
      temperature: softmax temperature, > 0.
      axis_name: mapped axis over which the batch is split; the value and its gradient are
        those of the mean over the global batch (see ``mean_over_devices``).

    Returns:
      A float32 scalar, the same on every device.

    Raises:
      ValueError: if the shapes disagree or ``temperature`` <= 0.

    >>> import jax.numpy as jnp
    >>> q = jnp.eye(3)
    >>> float(info_nce(q, q, temperature=0.05)) < 1e-3  # each query's key is its only match
    True

    References:
      He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020
      (arXiv:1911.05722), eq. 1; Chen et al., "An Empirical Study of Training Self-Supervised
      Vision Transformers", ICCV 2021 (arXiv:2104.02057).
    """
    q = jnp.asarray(q)
    k = jnp.asarray(k)
    if q.ndim != 2 or q.shape != k.shape:
        raise ValueError(
            f"info_nce expects q and k of the same shape [n, d]; got {q.shape}, {k.shape}."
        )
    if queue is not None and (jnp.ndim(queue) != 2 or jnp.shape(queue)[1] != q.shape[1]):
        raise ValueError(f"info_nce expects queue [K, {q.shape[1]}]; got {jnp.shape(queue)}.")
    if not temperature > 0:
        raise ValueError(f"info_nce temperature must be > 0; got {temperature}.")

    q = l2_normalize(q.astype(jnp.float32))
    k = l2_normalize(k.astype(jnp.float32))
    n = q.shape[0]
    if queue is not None:
        negatives = l2_normalize(jnp.asarray(queue, jnp.float32))
        positive = jnp.sum(q * k, axis=-1, keepdims=True)
        logits = jnp.concatenate([positive, q @ negatives.T], axis=1) / temperature
        targets = jnp.zeros(n, jnp.int32)
    else:
        if axis_name is None:
            keys, offset = k, 0
        else:
            keys = lax.all_gather(k, axis_name, tiled=True)
            offset = lax.axis_index(axis_name) * n
        logits = q @ keys.T / temperature
        targets = offset + jnp.arange(n)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    loss = -jnp.mean(jnp.take_along_axis(log_probs, targets[:, None], axis=1))
    return mean_over_devices(loss, axis_name)


def mlm_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    weights: ArrayLike,
    *,
    axis_name: Hashable | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Masked-language-model cross entropy and accuracy, weighted by the prediction weights.

    Both are weighted means over every prediction slot: with ``axis_name`` over the slots of all
    devices (numerator and denominator are summed over devices), so the value and its gradient
    equal the one-device loss on the global batch (see ``mean_over_devices`` for the drivers).

    Args:
      logits: [..., P, V] scores at the prediction slots (computed in float32 here).
      labels: int [..., P] target ids.
      weights: [..., P] slot weights (1 for real predictions, 0 for unused slots).
      axis_name: mapped axis over which the batch is split, or None.

    Returns:
      ``(loss, accuracy)``: float32 scalars, the same on every device; both are 0 when every
      weight is 0.

    Raises:
      ValueError: if the shapes disagree.

    >>> import jax.numpy as jnp
    >>> logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    >>> loss, accuracy = mlm_loss(logits, jnp.array([[0, 0]]), jnp.array([[1.0, 0.0]]))
    >>> round(float(loss), 4), float(accuracy)  # only the first slot counts: -log 0.5
    (0.6931, 1.0)

    References:
      Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
      Understanding", NAACL 2019 (arXiv:1810.04805), section 3.1.
    """
    logits = jnp.asarray(logits, jnp.float32)
    labels = jnp.asarray(labels)
    weights = jnp.asarray(weights, jnp.float32)
    if logits.shape[:-1] != labels.shape or labels.shape != weights.shape:
        raise ValueError(
            f"mlm_loss expects logits [..., P, V], labels and weights [..., P]; got "
            f"{logits.shape}, {labels.shape}, {weights.shape}."
        )
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    weights = lax.stop_gradient(weights)
    sums = (jnp.sum(weights * nll), jnp.sum(weights * correct), jnp.sum(weights))
    if axis_name is not None:
        sums = lax.psum(sums, axis_name)
    loss_sum, correct_sum, total = sums
    denominator = jnp.maximum(total, 1e-8)
    return loss_sum / denominator, correct_sum / denominator
