"""Online linear probe: a classifier on stop-gradient encoder features, trained in the train step.

Its accuracy on the training batches tracks the representation while pretraining runs, for the
price of one small matmul; the encoder never receives its gradient.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax


@dataclasses.dataclass(frozen=True)
class OnlineProbe:
    """Softmax regression ``features @ kernel + bias`` with its own optimiser.

    Examples with a negative label (unlabelled splits) are left out of the loss and the accuracy.

    >>> import numpy as np
    >>> probe = OnlineProbe(num_classes=3, tx=optax.sgd(0.1))
    >>> state = probe.init(feature_dim=4)
    >>> features, labels = np.eye(4, dtype=np.float32)[:3], np.array([0, 1, -1])
    >>> state, metrics = probe.update(state, features, labels)
    >>> state["params"]["kernel"].shape, round(float(metrics["probe_loss"]), 4)  # log(3)
    ((4, 3), 1.0986)
    """

    num_classes: int
    tx: optax.GradientTransformation

    def init(self, feature_dim: int) -> dict[str, Any]:
        """Zero weights (every class equally likely) and the optimiser state."""
        params = {
            "kernel": jnp.zeros((feature_dim, self.num_classes), jnp.float32),
            "bias": jnp.zeros((self.num_classes,), jnp.float32),
        }
        return {"params": params, "opt_state": self.tx.init(params)}

    def update(
        self,
        state: dict[str, Any],
        features: jax.Array,
        labels: jax.Array,
        axis_name: Hashable | None = None,
        *,
        reduce_grads: Callable[[Any], Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, jax.Array]]:
        """One optimiser step on this batch; returns the new state and batch metrics.

        Args:
          state: from ``init``.
          features: [b, F] this device's features; gradients never flow back into them.
          labels: int [b], negative for unlabelled examples.
          axis_name: mapped axis the batch is split over; the loss and accuracy are global means,
            and so is the gradient under shard_map (JAX sums it over devices).
          reduce_grads: what the driver needs on top of that, as in ``train.train_step``
            (``parallel.pmap_replicated_grads`` under pmap).

        Returns:
          (state, {"probe_loss", "probe_top1"}), the metrics computed before the update.
        """
        features = lax.stop_gradient(jnp.asarray(features, jnp.float32))
        labels = jnp.asarray(labels)
        valid = (labels >= 0).astype(jnp.float32)

        def global_sum(x):
            return x if axis_name is None else lax.psum(x, axis_name)

        count = jnp.maximum(global_sum(jnp.sum(valid)), 1.0)

        def loss_fn(params):
            logits = features @ params["kernel"] + params["bias"]
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
            return global_sum(jnp.sum(losses * valid)) / count, logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        if reduce_grads is not None:
            grads = reduce_grads(grads)
        correct = global_sum(jnp.sum((jnp.argmax(logits, -1) == labels) * valid)) / count
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state}, {
            "probe_loss": loss,
            "probe_top1": correct,
        }
