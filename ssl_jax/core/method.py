"""What a self-supervised method provides to the one generic trainer.

A method is a bundle of pure functions; the trainer never branches on which method it runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax


# (rng, sample_batch: a host batch like the ones the step gets) -> {"params": ...,
# "batch_stats": ..., "extra": ...}
class LossAux(NamedTuple):
    """What a method's loss hands the trainer beside the loss value.

    Attributes:
      mutated: new values of the state fields the forward pass changes ("batch_stats", "extra").
      metrics: scalars to log (global values: the trainer averages them over devices).
      probe_features: float32 [local batch, F] stop-gradient encoder features of the first
        view, rows aligned with ``batch["label"]``, for the online probe; None: nothing to probe.
    """

    mutated: dict[str, Any]
    metrics: dict[str, jax.Array]
    probe_features: jax.Array | None = None


InitFn = Callable[[jax.Array, jax.Array], dict[str, Any]]
# (params, state, batch, rng, axis_name) -> (loss, LossAux); a plain (mutated, metrics) pair is
# read as a LossAux without probe features.
# The loss's value is the global one (all-reduced over axis_name) and its gradient is the
# gradient of that value: under shard_map JAX sums replicated parameters' gradients itself.
LossFn = Callable[..., tuple[jax.Array, LossAux]]
# (state) -> state: method state updated after the optimiser step (EMA encoders).
AfterUpdateFn = Callable[[Any], Any]
# (variables, batch[input_key]: images uint8 [b, H, W, C] or token ids [b, L]) -> features
# float32 [b, F], in evaluation mode.
EncodeFn = Callable[[dict[str, Any], jax.Array], jax.Array]


def _unchanged(state: Any) -> Any:
    return state


@dataclasses.dataclass(frozen=True)
class Method:
    """The pure functions that define a method."""

    name: str
    init: InitFn
    loss: LossFn
    encode: EncodeFn
    after_update: AfterUpdateFn = _unchanged
    # The batch entry ``encode`` reads (and the online probe is sized from).
    input_key: str = "image"
