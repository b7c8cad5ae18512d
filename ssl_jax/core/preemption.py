"""SIGTERM (sent by TPU VM maintenance, SLURM and Kubernetes before a kill) as a request to stop.

The trainer asks at every step; all processes stop at the same step, save and return.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import jax
from absl import logging
from jax.experimental import multihost_utils


def _sync_manager_running() -> bool:
    # JAX's preemption service starts with jax.distributed when its option is on (the default).
    return jax.distributed.is_initialized() and bool(jax.config.jax_enable_preemption_service)


class PreemptionGuard:
    """Context manager that turns SIGTERM into a stop at a step every process agrees on.

    With several processes JAX's own preemption service catches the signal (installed by
    ``jax.distributed.initialize``) and agrees a step through its coordination service in the
    background: the per-step check is local, with no round trip. One process, without
    ``jax.distributed``, keeps a flag set by a Python handler.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        self._jax_service = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.requested = True
        logging.warning("received signal %d: saving a checkpoint at the next step", signum)

    def __enter__(self) -> PreemptionGuard:
        self._jax_service = _sync_manager_running()
        if not self._jax_service and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def should_stop(self, step: int) -> bool:
        """True at the step where every process stops (call it at every step, on every process)."""
        if self._jax_service:
            return multihost_utils.reached_preemption_sync_point(step)
        if jax.process_count() > 1:
            raise RuntimeError(
                "several processes without JAX's preemption service: start them through "
                "jax.distributed.initialize with jax_enable_preemption_service on."
            )
        return self.requested
