"""What a self-supervised method provides to the one generic trainer.

A method is a bundle of pure functions; the trainer never branches on which method it runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

# (rng, sample_batch: a host batch like the ones the step gets) -> {"params": ...,
# "batch_stats": ..., "extra": ...}
InitFn = Callable[[jax.Array, jax.Array], dict[str, Any]]
# (params, state, batch, rng, axis_name) -> (loss, (mutated, metrics dict)), where mutated holds
# the new values of state fields the forward pass changes ("batch_stats", "extra"), and may hold
# the features of the online probe under ssl_jax.core.probe.PROBE_FEATURES.
# The loss's value is the global one (all-reduced over axis_name) and its gradient is the
# gradient of that value: under shard_map JAX sums replicated parameters' gradients itself.
LossFn = Callable[..., tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]]
# (state) -> state: method state updated after the optimiser step (EMA encoders).
AfterUpdateFn = Callable[[Any], Any]
# (variables, images uint8 [b, H, W, C]) -> features float32 [b, F], in evaluation mode.
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
