"""The progress line's ETA and throughput.

SIGTERM to one of two processes (both stop at one step, save, exit 0 and the rerun ends bitwise
where the uninterrupted run ends) is checked on test_multihost's shared 2-process runs.
"""

import time

from ssl_jax.core import loop


def test_eta_keeps_its_days_and_throughput_starts_after_the_first_step():
    assert loop.format_duration(59) == "00:00:59"
    assert loop.format_duration(26 * 3600 + 61) == "1d 02:01:01"  # gmtime would show 02:01:01

    class Writer:
        def write_scalars(self, step, scalars):
            self.last = scalars

    writer = Writer()
    logger = loop.StepLogger(writer, lambda step: 0.1, batch_size=8, total_steps=100, start_step=0)
    time.sleep(0.3)  # as a first step that compiles
    logger.started(1)
    logger(1, {"loss": 1.0})  # nothing measured yet: no rate rather than one with the compile
    assert "examples_per_sec" not in writer.last
    time.sleep(0.05)
    logger(2, {"loss": 1.0})
    assert writer.last["steps_per_sec"] > 1 / 0.3  # the compile's 0.3 s is not counted
