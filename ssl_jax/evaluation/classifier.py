"""Softmax regression on fixed features: standardise, train with a cosine schedule, score top-k.

What ``linear`` fits on a frozen encoder's cached features; usable on any [N, F] array.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from ssl_jax.core import batching, optim, parallel
from ssl_jax.core.parallel import DATA_AXIS
from ssl_jax.evaluation import features

# Feature rows are fed to the devices this many bytes at a time, whatever the split's size.
STREAM_BYTES = 2**26
_STATISTICS_CHUNK = 8192


def standardization(train_features: ArrayLike, *, epsilon: float = 1e-3) -> tuple[np.ndarray, ...]:
    """Per-dimension mean [F] and scale [F] of the train features [N, F].

    BatchNorm without scale or centre, with its statistics frozen at the train split's (SimCLR's
    linear head). ``epsilon`` is relative to the mean variance, so that near-constant dimensions
    (dead units, image borders) are not blown up to outliers, whatever the features' scale.
    Accumulated in float64 over row chunks: no float64 copy of the whole matrix.
    """
    values = np.asarray(train_features)
    chunks = range(0, len(values), _STATISTICS_CHUNK)
    rows = lambda start: values[start : start + _STATISTICS_CHUNK].astype(np.float64)  # noqa: E731
    mean = sum(rows(start).sum(axis=0) for start in chunks) / len(values)
    variance = sum(((rows(start) - mean) ** 2).sum(axis=0) for start in chunks) / len(values)
    scale = np.sqrt(variance + epsilon * max(float(variance.mean()), 1e-12))
    return mean.astype(np.float32), scale.astype(np.float32)


def cross_entropy_loss(params: dict[str, jax.Array], inputs: jax.Array, labels: jax.Array):
    """Mean softmax cross-entropy of ``inputs [b, F] @ kernel [F, C] + bias [C]`` on labels [b]."""
    logits = inputs @ params["kernel"] + params["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def train_steps(params, opt_state, inputs, labels, live, *, tx: optax.GradientTransformation):
    """Optimiser steps over batches inputs [steps, b, F], labels [steps, b]; a step whose
    ``live`` [steps] is False (padding of an epoch's last chunk) leaves the state as it was.

    Returns the new state and the sum of the live steps' losses.
    """

    def step(carry, batch):
        params, opt_state = carry
        inputs, labels, live = batch
        loss, grads = jax.value_and_grad(cross_entropy_loss)(params, inputs, labels)
        updates, new_opt_state = tx.update(grads, opt_state, params)
        new = optax.apply_updates(params, updates), new_opt_state
        kept = jax.tree.map(lambda n, o: jnp.where(live, n, o), new, (params, opt_state))
        return kept, jnp.where(live, loss, 0.0)

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (inputs, labels, live))
    return params, opt_state, losses.sum()


def _batch_sharding(mesh: Mesh, batch_size: int) -> NamedSharding:
    # A batch that does not split evenly over the devices is replicated (still one chunk each).
    if batch_size % mesh.size:
        return parallel.replicated(mesh)
    return NamedSharding(mesh, P(None, DATA_AXIS))


def train_classifier(
    inputs: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    mesh: Mesh | None = None,
    stream_bytes: int = STREAM_BYTES,
) -> dict[str, jax.Array]:
    """Softmax-regression weights ``{"kernel": [F, C], "bias": [C]}`` for inputs [N, F], labels [N].

    Weights start at zero; every epoch visits the examples in an order drawn from ``seed``
    (``N mod batch_size`` of them, different each epoch, sit out); the learning rate
    ``learning_rate`` decays on a cosine to zero. Weight decay applies to the kernel only.

    The inputs stay on the host: each epoch's shuffled batches go to the devices of ``mesh``
    (default: all) about ``stream_bytes`` at a time, every batch split over the devices, so
    device memory does not grow with N.

    Raises:
      FloatingPointError: the training loss became non-finite.
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    inputs = np.asarray(inputs, np.float32)
    labels = np.asarray(labels, np.int32)
    count, dim = inputs.shape
    batch_size = min(batch_size, count)
    steps_per_epoch = count // batch_size
    chunk_steps = max(1, min(steps_per_epoch, stream_bytes // (batch_size * dim * 4)))
    schedule = optim.make_schedule(learning_rate, epochs * steps_per_epoch, warmup_steps=0)
    tx = optim.make_optimizer(optimizer, schedule, weight_decay=weight_decay, momentum=momentum)
    replicated = parallel.replicated(mesh)
    params = {"kernel": np.zeros((dim, num_classes), np.float32),
              "bias": np.zeros((num_classes,), np.float32)}  # fmt: skip
    params = jax.tree.map(lambda x: features.to_devices(x, replicated), params)
    opt_state = jax.jit(tx.init, out_shardings=replicated)(params)
    # Looked up at call time so tests can count traces; every chunk has the same shapes.
    run_steps = jax.jit(functools.partial(train_steps, tx=tx), donate_argnums=(0, 1))
    rows = _batch_sharding(mesh, batch_size)
    shuffle = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = shuffle.permutation(count)[: steps_per_epoch * batch_size]
        order = order.reshape(steps_per_epoch, batch_size)
        chunk_losses = []
        for start in range(0, steps_per_epoch, chunk_steps):
            chunk = order[start : start + chunk_steps]
            live = np.arange(chunk_steps) < len(chunk)
            chunk = batching.pad_rows(chunk, chunk_steps)
            params, opt_state, chunk_loss = run_steps(
                params, opt_state, features.to_devices(inputs[chunk], rows),
                features.to_devices(labels[chunk], rows), features.to_devices(live, replicated),
            )  # fmt: skip
            # Kept on device: one host sync per epoch, so the next chunk's transfer is not held
            # back behind this chunk's steps.
            chunk_losses.append(chunk_loss)
        loss = float(sum(chunk_losses)) / steps_per_epoch
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"linear classifier loss {loss} at epoch {epoch + 1}: lower learning_rate."
            )
    logging.info("linear classifier: %d epochs, final epoch loss %.4f", epochs, loss)
    return params


def _topk_hits(logits, labels, ks: Sequence[int]) -> dict[int, int]:
    logits = jnp.asarray(logits)
    _, top = jax.lax.top_k(logits, min(max(ks), logits.shape[-1]))
    hits = np.asarray(top == jnp.asarray(labels)[:, None])
    # Counted in integers: the reported fraction is exact, not a float32 mean.
    return {k: int(hits[:, :k].any(axis=1).sum()) for k in ks}


def topk_accuracy(logits: ArrayLike, labels: ArrayLike, ks: Sequence[int] = (1, 5)) -> dict:
    """For each k, the fraction of rows [N] whose label is among the k largest of logits [N, C].

    k above C counts every row as a hit.

    >>> logits = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    >>> topk_accuracy(logits, np.array([2, 0]), ks=(1, 2))
    {1: 0.5, 2: 1.0}
    """
    hits = _topk_hits(logits, labels, ks)
    return {k: hits[k] / len(labels) for k in ks}


def fit_and_score(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    config: ml_collections.ConfigDict,
    num_classes: int,
    *,
    mesh: Mesh | None = None,
    stream_bytes: int = STREAM_BYTES,
) -> dict[int, float]:
    """Top-1 and top-5 on ``test`` of the classifier ``config`` trains on ``train`` (x, y).

    Both splits' features stay on the host; the devices see ``stream_bytes`` of them at a time.
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    mean, scale = standardization(train[0])
    batch_size = min(config.batch_size, len(train[0]))
    params = train_classifier(
        (train[0] - mean) / scale,
        train[1],
        num_classes=num_classes,
        epochs=config.epochs,
        batch_size=batch_size,
        learning_rate=optim.peak_learning_rate(config.learning_rate, batch_size, "linear"),
        optimizer=config.optimizer,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        seed=config.seed,
        mesh=mesh,
        stream_bytes=stream_bytes,
    )
    inputs, labels = test
    rows = max(1, min(len(inputs), stream_bytes // (4 * inputs.shape[1])))
    logits_fn = jax.jit(lambda params, x: x @ params["kernel"] + params["bias"])
    hits = dict.fromkeys((1, 5), 0)
    for start in range(0, len(inputs), rows):
        chunk = (inputs[start : start + rows] - mean) / scale
        count = len(chunk)
        chunk = batching.pad_rows(chunk.astype(np.float32), rows)
        logits = logits_fn(params, features.to_devices(chunk, parallel.replicated(mesh)))
        logits = np.asarray(logits.addressable_data(0))[:count]
        for k, found in _topk_hits(logits, labels[start : start + count], (1, 5)).items():
            hits[k] += found
    return {k: hits[k] / len(labels) for k in hits}
