"""Weighted k-nearest-neighbour classification, the standard monitor of self-supervised features.

Cosine similarity, top-k neighbours voting with weight exp(similarity / temperature); the bank
is split over the devices, each finds its own nearest rows, and the global top k is merged.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from ssl_jax.core import batching, parallel
from ssl_jax.core.parallel import DATA_AXIS
from ssl_jax.evaluation import features
from ssl_jax.losses import l2_normalize


def _local_then_global_top_k(queries, bank, bank_labels, valid, *, k: int):
    """Per-device body: the k most similar rows of this device's bank shard, then of all shards.

    Shapes: queries [q, F] (replicated), bank [n, F], bank_labels [n], valid [n] (this device's
    rows). Returns (similarity [q, k], labels [q, k]) of the global top k, replicated.
    """
    similarity = l2_normalize(queries) @ l2_normalize(bank).T  # [q, n]
    similarity = jnp.where(valid, similarity, -jnp.inf)
    local_similarity, local_index = jax.lax.top_k(similarity, min(k, bank.shape[0]))
    # Gathered in device order, i.e. in bank-row order: top_k then breaks ties towards the lower
    # row, as the one-device rule does.
    gathered_similarity = jax.lax.all_gather(
        local_similarity, DATA_AXIS, axis=1, tiled=True, to="invarying"
    )
    gathered_labels = jax.lax.all_gather(
        bank_labels[local_index], DATA_AXIS, axis=1, tiled=True, to="invarying"
    )
    top_similarity, top = jax.lax.top_k(gathered_similarity, k)
    return top_similarity, jnp.take_along_axis(gathered_labels, top, axis=1)


@functools.lru_cache(maxsize=16)
def _vote_fn(mesh: Mesh, num_classes: int, k: int):
    rows = P(DATA_AXIS)
    top_k = jax.shard_map(
        functools.partial(_local_then_global_top_k, k=k),
        mesh=mesh,
        in_specs=(P(), rows, rows, rows),
        out_specs=(P(), P()),
    )

    @jax.jit
    def vote(queries, bank, bank_labels, valid, temperature):
        top_similarity, top_labels = top_k(queries, bank, bank_labels, valid)
        weights = jnp.exp(top_similarity / temperature)
        votes = jnp.sum(jax.nn.one_hot(top_labels, num_classes) * weights[..., None], axis=1)
        return jnp.argmax(votes, axis=-1)  # [q]

    return vote


def knn_predict(
    bank_features: ArrayLike,
    bank_labels: ArrayLike,
    query_features: ArrayLike,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    query_chunk: int = 1024,
    mesh: Mesh | None = None,
) -> np.ndarray:
    """Predicted labels [q] for query features [q, F] against a labelled bank [N, F], [N].

    Features are L2-normalised here (on the devices). Ties in votes go to the lower class
    index. The bank's rows are split over the devices of ``mesh`` (default: all devices), so
    no device holds more than ``ceil(N / devices)`` of them; each device finds its own k
    nearest rows and the global k are the nearest of those. Queries go through in chunks of
    ``query_chunk``.

    >>> bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> knn_predict(bank, np.array([0, 0, 1]), np.array([[0.0, 2.0]]), num_classes=2, k=1).tolist()
    [1]

    References:
      Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
      CVPR 2018 (weighted kNN with k=200, temperature 0.1).
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    # Normalised on the devices, shard by shard: the host never puts the whole bank on one.
    bank = np.asarray(bank_features, np.float32)
    queries = np.asarray(query_features, np.float32)
    count = bank.shape[0]
    k = min(k, count)
    padded = -(-count // mesh.size) * mesh.size
    pad = ((0, padded - count),)
    rows = parallel.batch_sharded(mesh)
    bank = features.to_devices(np.pad(bank, pad + ((0, 0),)), rows)
    labels = features.to_devices(np.pad(np.asarray(bank_labels, np.int32), pad), rows)
    valid = features.to_devices(np.arange(padded) < count, rows)
    vote = _vote_fn(mesh, num_classes, k)
    chunk_size = min(query_chunk, queries.shape[0])
    predictions = []
    for start in range(0, queries.shape[0], chunk_size):
        chunk = queries[start : start + chunk_size]
        chunk = batching.pad_rows(chunk, chunk_size)
        predicted = vote(features.to_devices(chunk, parallel.replicated(mesh)), bank, labels, valid,
                         temperature)  # fmt: skip
        predictions.append(np.asarray(predicted.addressable_data(0)))
    return np.concatenate(predictions)[: queries.shape[0]]


def knn_accuracy(
    bank_features: ArrayLike,
    bank_labels: ArrayLike,
    query_features: ArrayLike,
    query_labels: ArrayLike,
    **kwargs,
) -> float:
    """Top-1 accuracy of ``knn_predict`` for query features [q, F] with true labels [q].

    Takes ``knn_predict``'s keyword arguments (``num_classes`` is required).

    >>> bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> queries = np.array([[1.0, 0.2], [0.1, 1.0]])
    >>> knn_accuracy(bank, [0, 0, 1], queries, [0, 0], num_classes=2, k=1)
    0.5
    """
    predictions = knn_predict(bank_features, bank_labels, query_features, **kwargs)
    return float(np.mean(predictions == np.asarray(query_labels)))
