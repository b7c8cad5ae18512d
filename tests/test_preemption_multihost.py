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

from ssl_jax import checkpoint


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
