"""Self-supervised losses, written per device so they run unchanged under jit, shard_map and pmap.

With an ``axis_name`` the loss sees the embeddings of every device and equals the one-device loss
on the global batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

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
    "barlow_twins_loss",
    "byol_loss",
    "dino_center",
    "dino_loss",
    "info_nce",
    "l2_normalize",
    "mae_loss",
    "mean_over_devices",
    "mlm_loss",
    "multi_crop_nt_xent",
    "nt_xent",
    "simsiam_loss",
    "vicreg_loss",
    "vicreg_terms",
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


def multi_crop_nt_xent(
    views: Sequence[ArrayLike],
    *,
    temperature: float = 0.5,
    axis_name: Hashable | None = None,
) -> jax.Array:
    """NT-Xent over V >= 2 views of each image (multi-crop SimCLR).

    Each of the V x N embeddings is an anchor. Its positives are the other V - 1 views of its
    image, its negatives every view of every other image, and its term is
    ``-log(sum_pos exp(s / t) / sum_(all but itself) exp(s / t))`` for cosine similarities
    ``s``: the positives share one numerator, as in solo-learn's multi-crop SimCLR. The loss is
    the mean over all V x N anchors; with V = 2 it is :func:`nt_xent`.

    Args:
      views: V arrays [n, d], the embeddings of one view each (global or local crops alike),
        row i of every array from the same image on this device.
      temperature: softmax temperature, > 0.
      axis_name: mapped axis over which the batch is split. Every view is gathered from all
        devices, each device scores its own V x n anchors against the V x N global candidates,
        and the per-device means are averaged, so value and gradient equal the one-device loss
        on the global batch.

    Returns:
      A float32 scalar, the same on every device.

    Raises:
      ValueError: for fewer than two views, views of different shapes or not rank 2, or
        ``temperature`` <= 0.

    >>> import jax.numpy as jnp
    >>> z1 = jnp.arange(12.0).reshape(4, 3)
    >>> z2 = jnp.cos(z1)
    >>> bool(jnp.allclose(multi_crop_nt_xent([z1, z2]), nt_xent(z1, z2)))
    True
    >>> z = jnp.eye(4)
    >>> float(multi_crop_nt_xent([z, z, z], temperature=0.1)) < 1e-3  # views agree
    True

    References:
      Chen et al., arXiv:2002.05709, eq. 1; multi-crop: Caron et al., "Unsupervised Learning of
      Visual Features by Contrasting Cluster Assignments" (SwAV), NeurIPS 2020.
    """
    views = [jnp.asarray(v) for v in views]
    if len(views) < 2:
        raise ValueError(f"multi_crop_nt_xent needs at least 2 views; got {len(views)}.")
    shapes = {v.shape for v in views}
    if len(shapes) != 1 or views[0].ndim != 2:
        raise ValueError(
            f"multi_crop_nt_xent expects views of one shape [n, d]; got {[v.shape for v in views]}."
        )
    if not temperature > 0:
        raise ValueError(f"multi_crop_nt_xent temperature must be > 0; got {temperature}.")

    num_views, n = len(views), views[0].shape[0]
    local = l2_normalize(jnp.stack(views).astype(jnp.float32))  # [V, n, d]
    if axis_name is None:
        gathered, offset = local, 0
    else:
        gathered = lax.all_gather(local, axis_name, axis=1, tiled=True)  # [V, N, d]
        offset = lax.axis_index(axis_name) * n
    global_n = gathered.shape[1]
    anchors = local.reshape(num_views * n, -1)
    candidates = gathered.reshape(num_views * global_n, -1)

    anchor_view = jnp.repeat(jnp.arange(num_views), n)
    anchor_image = jnp.tile(jnp.arange(n), num_views) + offset
    column_view = jnp.repeat(jnp.arange(num_views), global_n)
    column_image = jnp.tile(jnp.arange(global_n), num_views)
    same_image = anchor_image[:, None] == column_image[None, :]
    itself = same_image & (anchor_view[:, None] == column_view[None, :])

    logits = anchors @ candidates.T / temperature  # [V n, V N]
    logits = jnp.where(itself, blockwise.MASK_VALUE, logits)
    positives = jnp.where(same_image & ~itself, logits, blockwise.MASK_VALUE)
    per_anchor = jax.nn.logsumexp(logits, axis=-1) - jax.nn.logsumexp(positives, axis=-1)
    return mean_over_devices(jnp.mean(per_anchor), axis_name)


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


def _pair(name: str, a: ArrayLike, b: ArrayLike) -> tuple[jax.Array, jax.Array]:
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"{name} expects two arrays of the same shape [n, d]; got {a.shape}, {b.shape}."
        )
    return a.astype(jnp.float32), b.astype(jnp.float32)


def _global_sum(x: jax.Array, axis_name: Hashable | None) -> jax.Array:
    """Sum over this device's rows, then over devices: a batch statistic of the global batch."""
    return _over_devices(jnp.sum(x, axis=0), axis_name)


def _over_devices(x: jax.Array, axis_name: Hashable | None) -> jax.Array:
    return x if axis_name is None else lax.psum(x, axis_name)


def _global_rows(n: int, axis_name: Hashable | None) -> int:
    return n if axis_name is None else n * lax.axis_size(axis_name)


def byol_loss(p: ArrayLike, z: ArrayLike, *, axis_name: Hashable | None = None) -> jax.Array:
    """BYOL's normalised MSE, ``||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)``, mean over the batch.

    One direction of BYOL's symmetric loss: the method adds the two views' terms. Gradients
    flow into ``z`` as into ``p``; BYOL passes target projections under stop_gradient.

    Args:
      p: [n, d] online predictions on this device.
      z: [n, d] target projections, row i pairing with row i of ``p``.
      axis_name: mapped axis over which the batch is split; value and gradient are those of
        the mean over the global batch (``mean_over_devices``).

    Returns:
      A float32 scalar in [0, 4], the same on every device.

    >>> import jax.numpy as jnp
    >>> p = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    >>> z = jnp.array([[3.0, 0.0], [1.0, 0.0]])  # parallel, then orthogonal: (0 + 2) / 2
    >>> float(byol_loss(p, z))
    1.0

    References:
      Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020 (arXiv:2006.07733), eq. 2.
    """
    p, z = _pair("byol_loss", p, z)
    local = jnp.mean(jnp.sum(jnp.square(l2_normalize(p) - l2_normalize(z)), axis=-1))
    return mean_over_devices(local, axis_name)


def simsiam_loss(p: ArrayLike, z: ArrayLike, *, axis_name: Hashable | None = None) -> jax.Array:
    """Negative cosine similarity ``-cos(p, z)``, mean over the batch (SimSiam's D, eq. 1).

    One direction of SimSiam's symmetric loss ``D(p1, z2) / 2 + D(p2, z1) / 2``; the caller
    puts ``z`` under stop_gradient.

    Args:
      p: [n, d] predictions on this device.
      z: [n, d] projections of the other view, row i pairing with row i of ``p``.
      axis_name: mapped axis over which the batch is split (``mean_over_devices``).

    Returns:
      A float32 scalar in [-1, 1], the same on every device.

    >>> import jax.numpy as jnp
    >>> p = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    >>> z = jnp.array([[3.0, 0.0], [1.0, -1.0]])  # cos 1 and -1/sqrt(2)
    >>> round(float(simsiam_loss(p, z)), 4)  # -(1 - 0.7071) / 2
    -0.1464
    >>> float(simsiam_loss(p, p))
    -1.0

    References:
      Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021
      (arXiv:2011.10566), eq. 1-2.
    """
    p, z = _pair("simsiam_loss", p, z)
    local = -jnp.mean(jnp.sum(l2_normalize(p) * l2_normalize(z), axis=-1))
    return mean_over_devices(local, axis_name)


def _off_diagonal_square_sum(matrix: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(matrix)) - jnp.sum(jnp.square(jnp.diagonal(matrix)))


def barlow_twins_loss(
    z1: ArrayLike,
    z2: ArrayLike,
    *,
    lambda_offdiag: float = 0.0051,
    eps: float = 1e-5,
    axis_name: Hashable | None = None,
) -> jax.Array:
    """Barlow Twins: the views' cross-correlation matrix pushed to the identity.

    Each view's embeddings are standardised per dimension with the mean and (biased) variance
    of the *global* batch, as the reference code's affine-free synchronised BatchNorm does:
    ``(z - mean) / sqrt(var + eps)``. ``C = z1n^T z2n / N`` over the N global examples, and the
    loss is ``sum_i (1 - C_ii)^2 + lambda_offdiag * sum_{i != j} C_ij^2``. With ``axis_name``
    the means, variances and C are sums over every device's rows (``psum``), so the value, the
    same on every device, and its gradient are the one-device ones on the global batch.

    Args:
      z1: [n, d] projections of the first view on this device.
      z2: [n, d] projections of the second view, row i pairing with row i of ``z1``.
      lambda_offdiag: weight of the redundancy-reduction (off-diagonal) term.
      eps: added to the variance before the square root (BatchNorm's epsilon).
      axis_name: mapped axis over which the batch is split, or None.

    Returns:
      A float32 scalar, the same on every device.

    >>> import jax.numpy as jnp
    >>> z = jnp.array([[1.0, 2.0], [-1.0, 0.0], [1.0, -2.0], [-1.0, 0.0]])
    >>> round(float(barlow_twins_loss(z, z, lambda_offdiag=1.0, eps=0.0)), 6)  # C = I
    0.0
    >>> round(float(barlow_twins_loss(z, -z, lambda_offdiag=1.0, eps=0.0)), 6)  # C = -I: 2 x 2^2
    8.0

    References:
      Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML
      2021 (arXiv:2103.03230), eq. 1-2; facebookresearch/barlowtwins main.py.
    """
    z1, z2 = _pair("barlow_twins_loss", z1, z2)
    count = _global_rows(z1.shape[0], axis_name)

    def standardise(z):
        mean = _global_sum(z, axis_name) / count
        var = _global_sum(jnp.square(z - mean), axis_name) / count
        return (z - mean) * lax.rsqrt(var + eps)

    n1, n2 = standardise(z1), standardise(z2)
    c = _over_devices(n1.T @ n2, axis_name) / count  # [d, d]
    on_diagonal = jnp.sum(jnp.square(1.0 - jnp.diagonal(c)))
    return on_diagonal + lambda_offdiag * _off_diagonal_square_sum(c)


def vicreg_terms(
    x: ArrayLike,
    y: ArrayLike,
    *,
    eps: float = 1e-4,
    axis_name: Hashable | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """VICReg's invariance, variance and covariance terms, each over the global batch.

    - invariance: the mean over all N x d entries of ``(x - y)^2`` (``F.mse_loss``);
    - variance: ``mean_j relu(1 - sqrt(var_j + eps))`` per view (unbiased variance over the N
      global examples), averaged over the two views;
    - covariance: ``sum_{i != j} Cov_ij^2 / d`` per view (covariance with N - 1), summed over
      the two views.

    With ``axis_name`` the means and covariances are sums over every device's rows (``psum``)
    and the invariance term a mean over devices, so each term and its gradient are the
    one-device ones on the global batch.

    Args:
      x: [n, d] projections of the first view on this device.
      y: [n, d] projections of the second view.
      eps: added to the variance before the square root.
      axis_name: mapped axis over which the batch is split, or None.

    Returns:
      ``(invariance, variance, covariance)``, float32 scalars, the same on every device.

    References:
      Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
      Self-Supervised Learning", ICLR 2022 (arXiv:2105.04906), eq. 1-6;
      facebookresearch/vicreg main_vicreg.py.
    """
    x, y = _pair("vicreg_terms", x, y)
    count = _global_rows(x.shape[0], axis_name)
    dim = x.shape[1]
    invariance = mean_over_devices(jnp.mean(jnp.square(x - y)), axis_name)

    def variance_and_covariance(z):
        centred = z - _global_sum(z, axis_name) / count
        cov = _over_devices(centred.T @ centred, axis_name) / (count - 1)
        std = jnp.sqrt(jnp.diagonal(cov) + eps)
        return jnp.mean(jax.nn.relu(1.0 - std)), _off_diagonal_square_sum(cov) / dim

    var_x, cov_x = variance_and_covariance(x)
    var_y, cov_y = variance_and_covariance(y)
    return invariance, (var_x + var_y) / 2, cov_x + cov_y


def vicreg_loss(
    x: ArrayLike,
    y: ArrayLike,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
    axis_name: Hashable | None = None,
) -> jax.Array:
    """VICReg: ``sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance``.

    The terms are ``vicreg_terms``' (variance and covariance over the global batch).

    Args:
      x: [n, d] projections of the first view on this device.
      y: [n, d] projections of the second view, row i pairing with row i of ``x``.
      sim_coeff, std_coeff, cov_coeff: the paper's lambda, mu and nu (25, 25, 1).
      eps: added to the variance before the square root.
      axis_name: mapped axis over which the batch is split, or None.

    Returns:
      A float32 scalar, the same on every device.

    >>> import jax.numpy as jnp
    >>> x = jnp.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]])  # var 8/3, cov 0
    >>> round(float(vicreg_loss(x, x)), 6)  # identical views, spread out, decorrelated
    0.0
    >>> round(float(vicreg_loss(jnp.zeros((4, 2)), x, eps=0.0)), 4)  # 25 * 2 + 25 * 1 / 2
    62.5

    References:
      Bardes, Ponce & LeCun, ICLR 2022 (arXiv:2105.04906), eq. 6.
    """
    invariance, variance, covariance = vicreg_terms(x, y, eps=eps, axis_name=axis_name)
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


def mae_loss(
    predictions: ArrayLike,
    patches: ArrayLike,
    *,
    norm_pix: bool = True,
    eps: float = 1e-6,
    axis_name: Hashable | None = None,
) -> jax.Array:
    """MAE's reconstruction loss: mean squared error per masked patch, mean over masked patches.

    With ``norm_pix`` each target patch is standardised by its own pixels' mean and unbiased
    variance (``(x - mean) / sqrt(var + eps)``, torch's ``var`` as in the reference), which the
    paper finds gives better representations than raw pixels. Every image has the same number
    of masked patches, so the global mean is the mean over devices of the local means.

    Args:
      predictions: [..., M, P] decoder outputs at the M masked patches, P = patch² x channels.
      patches: [..., M, P] the original pixels of those patches, in the same layout.
      norm_pix: standardise each target patch.
      eps: added to the variance before the square root.
      axis_name: mapped axis over which the batch is split, or None.

    Returns:
      A float32 scalar, the same on every device.

    Raises:
      ValueError: if the shapes differ or a patch has fewer than 2 pixels with ``norm_pix``.

    >>> import jax.numpy as jnp
    >>> patches = jnp.array([[[0.0, 2.0], [1.0, 1.0]]])  # 2 masked patches of 2 pixels
    >>> float(mae_loss(jnp.zeros((1, 2, 2)), patches, norm_pix=False))  # (4/2 + 2/2) / 2
    1.5
    >>> target = (jnp.array([0.0, 2.0]) - 1.0) / jnp.sqrt(2.0 + 1e-6)  # unbiased variance 2
    >>> round(float(mae_loss(jnp.zeros((1, 2, 2)), patches)), 4)  # (mean(target²) + 0) / 2
    0.25

    References:
      He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022
      (arXiv:2111.06377), section 3; facebookresearch/mae models_mae.py (forward_loss).
    """
    predictions = jnp.asarray(predictions, jnp.float32)
    patches = jnp.asarray(patches, jnp.float32)
    if predictions.shape != patches.shape or predictions.ndim < 2:
        raise ValueError(
            f"mae_loss expects predictions and patches of the same shape [..., M, P]; got "
            f"{predictions.shape}, {patches.shape}."
        )
    if norm_pix:
        if patches.shape[-1] < 2:
            raise ValueError("mae_loss with norm_pix needs patches of at least 2 pixels.")
        mean = jnp.mean(patches, axis=-1, keepdims=True)
        var = jnp.var(patches, axis=-1, keepdims=True, ddof=1)
        patches = (patches - mean) / jnp.sqrt(var + eps)
    per_patch = jnp.mean(jnp.square(predictions - patches), axis=-1)
    return mean_over_devices(jnp.mean(per_patch), axis_name)


def dino_loss(
    student: Sequence[ArrayLike],
    teacher: Sequence[ArrayLike],
    center: ArrayLike,
    *,
    student_temp: float = 0.1,
    teacher_temp: ArrayLike = 0.04,
    axis_name: Hashable | None = None,
) -> jax.Array:
    """DINO's cross-entropy between the centred, sharpened teacher and the student, over pairs.

    For every teacher view ``t`` (the global crops) and every student view ``s != t``:
    ``mean_n sum_k -softmax((teacher_t - center) / teacher_temp) * log_softmax(student_s /
    student_temp)``, then the mean over those pairs. The teacher side is under stop_gradient.

    Args:
      student: V arrays [n, K], the student's outputs for every view, the global ones first.
      teacher: G arrays [n, K] (G <= V), the teacher's outputs for the global views, in order.
      center: [K] the running center of the teacher's outputs.
      student_temp, teacher_temp: the temperatures (the teacher's may be a traced schedule).
      axis_name: mapped axis over which the batch is split, or None.

    Returns:
      A float32 scalar, the same on every device.

    >>> import jax.numpy as jnp
    >>> uniform = [jnp.zeros((2, 4))] * 2
    >>> round(float(dino_loss(uniform, uniform, jnp.zeros(4))), 4)  # log 4
    1.3863

    References:
      Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021
      (arXiv:2104.14294), algorithm 1; facebookresearch/dino main_dino.py (DINOLoss).
    """
    student = [jnp.asarray(x, jnp.float32) for x in student]
    teacher = [jnp.asarray(x, jnp.float32) for x in teacher]
    if not teacher or len(teacher) > len(student) or len(student) < 2:
        raise ValueError(
            f"dino_loss expects at least 2 student views and 1 to {len(student)} teacher views; "
            f"got {len(student)} and {len(teacher)}."
        )
    center = lax.stop_gradient(jnp.asarray(center, jnp.float32))
    targets = [
        lax.stop_gradient(jax.nn.softmax((t - center) / teacher_temp, axis=-1)) for t in teacher
    ]
    log_probs = [jax.nn.log_softmax(s / student_temp, axis=-1) for s in student]
    total, pairs = 0.0, 0
    for t_index, target in enumerate(targets):
        for s_index, log_prob in enumerate(log_probs):
            if s_index != t_index:
                total = total + jnp.mean(jnp.sum(-target * log_prob, axis=-1))
                pairs += 1
    return mean_over_devices(total / pairs, axis_name)


def dino_center(
    teacher: Sequence[ArrayLike],
    center: ArrayLike,
    *,
    momentum: float = 0.9,
    axis_name: Hashable | None = None,
) -> jax.Array:
    """The center's EMA update: ``momentum * center + (1 - momentum) * mean of the teacher's
    outputs over every global view of the global batch`` (summed over devices).

    >>> import jax.numpy as jnp
    >>> dino_center([jnp.ones((2, 3)), jnp.zeros((2, 3))], jnp.zeros(3), momentum=0.5).tolist()
    [0.25, 0.25, 0.25]
    """
    teacher = jnp.concatenate([jnp.asarray(t, jnp.float32) for t in teacher], axis=0)
    batch_mean = _global_sum(teacher, axis_name) / _global_rows(teacher.shape[0], axis_name)
    return momentum * jnp.asarray(center, jnp.float32) + (1 - momentum) * batch_mean
