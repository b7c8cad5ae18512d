"""The training state: one immutable pytree that a checkpoint saves and restores whole.

Method-specific state (momentum encoders, queues) lives in ``extra``.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped.

    Attributes:
      step: number of optimiser steps taken; also fixes the data position and randomness.
      params: trainable parameters.
      batch_stats: BatchNorm running statistics (empty dict for models without BN).
      opt_state: optax state (momenta, schedules' counts).
      rng: base PRNG key (raw uint32[2]); each step folds in its step number.
      extra: method state updated outside the gradient (e.g. a momentum encoder), or {}.
      probe: the online linear probe's parameters and optimiser state, or {} without a probe.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    extra: Any = flax.struct.field(default_factory=dict)
    probe: Any = flax.struct.field(default_factory=dict)
