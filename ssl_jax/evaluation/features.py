"""Frozen-encoder feature extraction over the mesh, for kNN and linear evaluation.

Each process passes its slice of a split; every process gets the features of all slices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from ssl_jax import parallel


def extract_features(
    encode: Callable[[Any, jax.Array], jax.Array],
    variables: Any,
    local_images: np.ndarray,
    local_labels: np.ndarray,
    mesh: Mesh,
    *,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Features [N, F] and labels [N] of every process's images, in process order.

    Args:
      encode: ``(variables, images [b, H, W, C]) -> features [b, F]``, evaluation mode.
      variables: replicated model variables.
      local_images: this process's images [n, H, W, C]; processes may hold different counts.
      local_labels: their labels [n].
      mesh: device mesh; ``batch_size`` (global) must divide by its device count.
      batch_size: global number of images per forward pass.

    >>> from ssl_jax import parallel
    >>> mesh = parallel.make_mesh()
    >>> encode = lambda variables, images: images.reshape(len(images), -1) * variables
    >>> images, labels = np.ones((3, 2, 2, 1), np.float32), np.arange(3)
    >>> x, y = extract_features(encode, 2.0, images, labels, mesh, batch_size=mesh.size)
    >>> x.shape, y.tolist(), float(x.max())
    ((3, 4), [0, 1, 2], 2.0)
    """
    local_batch = batch_size // jax.process_count()
    encode_fn = jax.jit(encode, out_shardings=parallel.batch_sharded(mesh))
    count = len(local_images)
    # Every process must run the same number of steps, whatever its own count.
    num_batches = int(multihost_utils.process_allgather(np.array(-(-count // local_batch))).max())
    features = []
    for index in range(num_batches):
        chunk = local_images[index * local_batch : (index + 1) * local_batch]
        padded = np.zeros((local_batch, *local_images.shape[1:]), local_images.dtype)
        padded[: len(chunk)] = chunk
        output = encode_fn(variables, parallel.to_global(padded, mesh))
        features.append(np.asarray(multihost_utils.process_allgather(output, tiled=True)))
    valid = np.zeros(num_batches * local_batch, bool)
    valid[:count] = True
    labels = np.full(num_batches * local_batch, -1, np.int32)
    labels[:count] = local_labels
    valid_all = _gather_rows(valid, num_batches, local_batch)
    labels_all = _gather_rows(labels, num_batches, local_batch)
    features_all = np.concatenate(features).reshape(num_batches, -1, features[0].shape[-1])
    features_all = features_all.reshape(-1, features_all.shape[-1])
    return features_all[valid_all], labels_all[valid_all]


def _gather_rows(local: np.ndarray, num_batches: int, local_batch: int) -> np.ndarray:
    """Host values in the order the gathered features come in: batch-major, then process."""
    gathered = np.asarray(multihost_utils.process_allgather(local))  # [processes, num_batches * b]
    gathered = gathered.reshape(-1, num_batches, local_batch).transpose(1, 0, 2)
    return gathered.reshape(-1)
