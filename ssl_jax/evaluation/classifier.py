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
from jax.typing import ArrayLike

from ssl_jax import optim


def standardization(train_features: ArrayLike, *, epsilon: float = 1e-3) -> tuple[np.ndarray, ...]:
    """Per-dimension mean [F] and scale [F] of the train features [N, F].

    BatchNorm without scale or centre, with its statistics frozen at the train split's (SimCLR's
    linear head). ``epsilon`` is relative to the mean variance, so that near-constant dimensions
    (dead units, image borders) are not blown up to outliers, whatever the features' scale.
    """
    values = np.asarray(train_features, np.float64)
    variance = values.var(axis=0)
    scale = np.sqrt(variance + epsilon * max(float(variance.mean()), 1e-12))
    return values.mean(axis=0).astype(np.float32), scale.astype(np.float32)


def cross_entropy_loss(params: dict[str, jax.Array], inputs: jax.Array, labels: jax.Array):
    """Mean softmax cross-entropy of ``inputs [b, F] @ kernel [F, C] + bias [C]`` on labels [b]."""
    logits = inputs @ params["kernel"] + params["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def train_epoch(params, opt_state, inputs, labels, order, *, tx: optax.GradientTransformation):
    """One pass of optimiser steps over the batches ``order`` [steps, batch] (row indices)."""

    def step(carry, batch_rows):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(cross_entropy_loss)(
            params, inputs[batch_rows], labels[batch_rows]
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
    return params, opt_state, losses.mean()


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
) -> dict[str, jax.Array]:
    """Softmax-regression weights ``{"kernel": [F, C], "bias": [C]}`` for inputs [N, F], labels [N].

    Weights start at zero; every epoch visits the examples in an order drawn from ``seed``
    (``N mod batch_size`` of them, different each epoch, sit out); the learning rate
    ``learning_rate`` decays on a cosine to zero. Weight decay applies to the kernel only.

    Raises:
      FloatingPointError: the training loss became non-finite.
    """
    inputs = jnp.asarray(inputs, jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)
    count, dim = inputs.shape
    batch_size = min(batch_size, count)
    steps_per_epoch = count // batch_size
    schedule = optim.make_schedule(learning_rate, epochs * steps_per_epoch, warmup_steps=0)
    tx = optim.make_optimizer(optimizer, schedule, weight_decay=weight_decay, momentum=momentum)
    params = {"kernel": jnp.zeros((dim, num_classes)), "bias": jnp.zeros((num_classes,))}
    opt_state = tx.init(params)
    # Looked up at call time so tests can count traces; every epoch has the same shapes.
    run_epoch = jax.jit(functools.partial(train_epoch, tx=tx), donate_argnums=(0, 1))
    shuffle = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = shuffle.permutation(count)[: steps_per_epoch * batch_size]
        params, opt_state, loss = run_epoch(
            params, opt_state, inputs, labels, order.reshape(steps_per_epoch, batch_size)
        )
        if not np.isfinite(float(loss)):
            raise FloatingPointError(
                f"linear classifier loss {float(loss)} at epoch {epoch + 1}: lower learning_rate."
            )
    logging.info("linear classifier: %d epochs, final epoch loss %.4f", epochs, float(loss))
    return params


def topk_accuracy(logits: ArrayLike, labels: ArrayLike, ks: Sequence[int] = (1, 5)) -> dict:
    """For each k, the fraction of rows [N] whose label is among the k largest of logits [N, C].

    k above C counts every row as a hit.

    >>> logits = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    >>> topk_accuracy(logits, np.array([2, 0]), ks=(1, 2))
    {1: 0.5, 2: 1.0}
    """
    logits = jnp.asarray(logits)
    _, top = jax.lax.top_k(logits, min(max(ks), logits.shape[-1]))
    hits = np.asarray(top == jnp.asarray(labels)[:, None])
    # Counted in integers: the reported fraction is exact, not a float32 mean.
    return {k: int(hits[:, :k].any(axis=1).sum()) / len(hits) for k in ks}


def fit_and_score(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    config: ml_collections.ConfigDict,
    num_classes: int,
) -> dict[int, float]:
    """Top-1 and top-5 on ``test`` of the classifier ``config`` trains on ``train`` (x, y)."""
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
    )
    logits = jnp.asarray((test[0] - mean) / scale) @ params["kernel"] + params["bias"]
    return topk_accuracy(logits, test[1], ks=(1, 5))
