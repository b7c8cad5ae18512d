"""Weighted k-nearest-neighbour classification, the standard monitor of self-supervised features.

Cosine similarity, top-k neighbours voting with weight exp(similarity / temperature).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ssl_jax.losses import l2_normalize


@functools.partial(jax.jit, static_argnames=("num_classes", "k"))
def _vote(queries, bank, bank_labels, *, num_classes: int, k: int, temperature: float):
    similarity = queries @ bank.T  # [q, N]
    top_similarity, top_index = jax.lax.top_k(similarity, k)
    weights = jnp.exp(top_similarity / temperature)
    votes = jax.nn.one_hot(bank_labels[top_index], num_classes) * weights[..., None]
    return jnp.sum(votes, axis=1)  # [q, num_classes]


def knn_predict(
    bank_features: ArrayLike,
    bank_labels: ArrayLike,
    query_features: ArrayLike,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    query_chunk: int = 1024,
) -> np.ndarray:
    """Predicted labels [q] for query features [q, F] against a labelled bank [N, F], [N].

    Features are L2-normalised here. Ties in votes go to the lower class index.

    >>> bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> knn_predict(bank, np.array([0, 0, 1]), np.array([[0.0, 2.0]]), num_classes=2, k=1).tolist()
    [1]

    References:
      Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
      CVPR 2018 (weighted kNN with k=200, temperature 0.1).
    """
    bank = l2_normalize(jnp.asarray(bank_features, jnp.float32))
    labels = jnp.asarray(bank_labels, jnp.int32)
    queries = l2_normalize(jnp.asarray(query_features, jnp.float32))
    k = min(k, bank.shape[0])
    predictions = []
    for start in range(0, queries.shape[0], query_chunk):
        chunk = queries[start : start + query_chunk]
        if chunk.shape[0] < query_chunk and queries.shape[0] > query_chunk:
            # Pad the last chunk so the vote compiles once.
            chunk = jnp.pad(chunk, ((0, query_chunk - chunk.shape[0]), (0, 0)))
        scores = _vote(chunk, bank, labels, num_classes=num_classes, k=k, temperature=temperature)
        predictions.append(np.asarray(jnp.argmax(scores, axis=-1)))
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
