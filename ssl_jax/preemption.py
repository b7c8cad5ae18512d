"""SIGTERM (sent by TPU VM maintenance, SLURM and Kubernetes before a kill) as a request to stop.

The trainer polls it at step boundaries, saves a checkpoint and returns; the rerun continues.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


class PreemptionGuard:
    """Context manager that turns SIGTERM into a flag (``requested``) instead of death."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.requested = True
        logging.warning("received signal %d: saving a checkpoint at the next step", signum)

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def should_stop(self, step: int, sync_every_steps: int) -> bool:
        """True at the step where every process agrees to stop.

        One process reads its flag each step. Several processes must stop at the same step
        (the save is collective), so they exchange flags every ``sync_every_steps``.
        """
        if jax.process_count() == 1:
            return self.requested
        if step % sync_every_steps:
            return False
        flags = multihost_utils.process_allgather(np.array(self.requested))
        return bool(np.any(flags))
