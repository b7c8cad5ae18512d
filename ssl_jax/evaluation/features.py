"""Frozen-encoder feature extraction over the mesh, for kNN and linear evaluation.

Each process passes its slice of a split; every process gets the features of all slices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from ssl_jax.core import batching, parallel


def to_devices(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array of ``array``, which every process holds whole, laid out as ``sharding``.

    Each device copies only its own block (multi-host safe, unlike ``jax.device_put``).
    """
    array = np.asarray(array)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def extract_features(
    encode: Callable[[Any, jax.Array], jax.Array],
    variables: Any,
    local_images: Any,
    local_labels: np.ndarray | None,
    mesh: Mesh,
    *,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Features [N, F] and labels [N] of every process's images, in process order.

    Args:
      encode: ``(variables, images [b, H, W, C]) -> features [b, F]``, evaluation mode.
      variables: replicated model variables.
      local_images: this process's images [n, H, W, C]; processes may hold different counts.
        Or an ``images.SplitStream`` (with ``local_labels`` None): read a batch at a time.
      local_labels: their labels [n].
      mesh: device mesh; ``batch_size`` (global) must divide by its device count.
      batch_size: global number of images per forward pass.

    >>> from ssl_jax.core import parallel
    >>> mesh = parallel.make_mesh()
    >>> encode = lambda variables, images: images.reshape(len(images), -1) * variables
    >>> images, labels = np.arange(12, dtype=np.float32).reshape(3, 2, 2, 1), np.arange(3)
    >>> x, y = extract_features(encode, 2.0, images, labels, mesh, batch_size=mesh.size)
    >>> x.shape, y.tolist(), x[:, 0].tolist()
    ((3, 4), [0, 1, 2], [0.0, 8.0, 16.0])
    """
    if local_labels is None:
        return extract_feature_stream(
            encode, variables, local_images, mesh, batch_size=batch_size,
            count=len(local_images), image_shape=local_images.image_shape,
        )  # fmt: skip
    local_batch = batch_size // jax.process_count()
    chunks = (
        (local_images[i : i + local_batch], local_labels[i : i + local_batch])
        for i in range(0, len(local_images), local_batch)
    )
    return extract_feature_stream(
        encode, variables, chunks, mesh, batch_size=batch_size, count=len(local_images),
        image_shape=local_images.shape[1:], dtype=local_images.dtype,
    )  # fmt: skip


def extract_feature_stream(
    encode: Callable[[Any, jax.Array], jax.Array],
    variables: Any,
    local_batches: Iterable[tuple[np.ndarray, np.ndarray]],
    mesh: Mesh,
    *,
    batch_size: int,
    count: int,
    image_shape: tuple[int, ...] | None = None,
    dtype: Any = np.uint8,
) -> tuple[np.ndarray, np.ndarray]:
    """``extract_features`` over this process's (images, labels) batches, read one at a time.

    Only features are kept, so memory grows with the split's feature rows, not its pixels.
    Batches hold at most ``batch_size // process_count`` examples; ``count`` bounds how many this
    process yields in all (it may yield fewer, e.g. undecodable images skipped);
    ``image_shape`` (one image's) lets a process whose stream is empty pad its share.
    """
    local_batch = batch_size // jax.process_count()
    encode_fn = jax.jit(encode, out_shardings=parallel.batch_sharded(mesh))
    # Every process must run the same number of steps, whatever its own count.
    num_batches = int(multihost_utils.process_allgather(np.array(-(-count // local_batch))).max())
    batches = iter(local_batches)
    features, valid, labels, shape = [], [], [], image_shape
    for _ in range(num_batches):
        images, batch_labels = next(batches, (None, None))
        if images is not None:
            shape, dtype = images.shape[1:], images.dtype
        if images is None:  # this process is out of images: a batch of padding only
            images, batch_labels = np.zeros((0, *shape), dtype), np.zeros(0, np.int32)
        padded = batching.pad_rows(images, local_batch)
        mask = np.arange(local_batch) < len(images)
        row_labels = batching.pad_rows(np.asarray(batch_labels, np.int32), local_batch, fill=-1)
        output = encode_fn(variables, parallel.to_global(padded, mesh))
        features.append(np.asarray(multihost_utils.process_allgather(output, tiled=True)))
        valid.append(mask)
        labels.append(row_labels)
    valid_all = _gather_rows(np.concatenate(valid))
    labels_all = _gather_rows(np.concatenate(labels))
    # Each gathered batch is [processes x local_batch] rows; process-major order makes the rows
    # of processes that read consecutive slices of a split come in the split's own order, so
    # what is fitted or voted on them does not depend on the process count.
    width = features[0].shape[-1]
    features_all = np.stack(features).reshape(num_batches, -1, local_batch, width)
    features_all = features_all.transpose(1, 0, 2, 3).reshape(-1, width)
    return features_all[valid_all], labels_all[valid_all]


def _gather_rows(local: np.ndarray) -> np.ndarray:
    """Every process's host values [num_batches * local_batch], process-major."""
    return np.asarray(multihost_utils.process_allgather(local)).reshape(-1)
