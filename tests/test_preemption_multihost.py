"""SIGTERM to one of two processes: JAX's preemption service stops both at the same step.

Both save that step and exit 0; the rerun ends bitwise where the uninterrupted run ends.
"""

import os
import re
import signal
import time

import pytest
from multihost_runs import TOTAL_STEPS, final_arrays, read, start, uninterrupted, wait, wait_for
from resume import assert_bitwise_equal
from test_data import needs_fashion_mnist

from ssl_jax.core import checkpoint, loop


@pytest.mark.slow
@needs_fashion_mnist
def test_sigterm_to_one_process_stops_both_at_one_step_and_resumes_bitwise(
    tmp_path, tmp_path_factory
):
    want = uninterrupted(tmp_path_factory)
    workdir = tmp_path / "run"
    children = start(workdir, cwd=tmp_path, logs=tmp_path / "logs")
    # Process 0 prints the step lines; the signal lands a few steps into training.
    wait_for(lambda: "step 3/" in read(children[0][1]), children, what="step 3")
    children[1][0].send_signal(signal.SIGTERM)
    signalled = time.perf_counter()
    results = wait(children)
    seconds = time.perf_counter() - signalled
    stops = []
    for process, (returncode, output) in enumerate(results):
        assert returncode == 0, f"process {process}:\n{output[-3000:]}"
        stops += [int(s) for s in re.findall(r"stopped at step (\d+) on request", output)]
    assert "step 2/" not in results[1][1]  # step lines come from process 0 alone
    assert len(stops) == 2 and stops[0] == stops[1] < TOTAL_STEPS, stops
    saved = checkpoint.Checkpointer(str(workdir), create=False).all_steps()
    assert saved[-1] == stops[0], saved
    print(f"SIGTERM to process 1: both saved step {stops[0]}; {seconds:.1f} s from signal to exit")

    rerun = wait(start(workdir, cwd=tmp_path, logs=tmp_path / "logs_rerun"))
    for process, (returncode, output) in enumerate(rerun):
        assert returncode == 0, f"process {process}:\n{output[-3000:]}"
        assert f"at step {stops[0]}" in output
    assert_bitwise_equal(final_arrays(workdir), want)
    assert os.path.isdir(workdir / "checkpoints" / str(TOTAL_STEPS))


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
