"""Helpers of the resume tests: a run SIGKILLed at a random moment and rerun, and bit-for-bit
tree equality."""

import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from ssl_jax.core import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(workdir, overrides):
    """The entry point in its own process, stdout and stderr merged into one text pipe."""
    command = [sys.executable, "-m", "ssl_jax.main", f"--workdir={workdir}", *overrides]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(workdir, overrides):
    """Runs the entry point to its end; returns its output."""
    process = start(workdir, overrides)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    return output


def kill_at_a_random_moment(workdir, overrides, total_steps, rng):
    """SIGKILLs a run somewhere after step 1..total_steps-1; returns where, as text.

    The moment is a step s drawn uniformly, then a delay of up to one step interval (the time
    between the two step lines before it), so kills land in steps, in saves in flight and in
    the deletions of keep-N alike, not only next to one save.
    """
    step = rng.randint(1, total_steps - 1)
    fraction = rng.random()
    process = start(workdir, overrides)
    seen, lines, last = {}, [], time.monotonic()
    deadline = last + 900
    for line in process.stdout:
        lines.append(line)
        now = time.monotonic()
        for s in range(1, total_steps + 1):
            if f"step {s}/{total_steps} " in line:
                seen[s] = now
        if step in seen:
            break
        assert now < deadline, "".join(lines[-20:])
    else:
        raise AssertionError(f"step {step} never printed:\n" + "".join(lines[-30:]))
    # Step 1's line comes after compiling, so no interval precedes it: half a second then.
    interval = seen[step] - seen[step - 1] if step - 1 in seen else 0.5
    delay = fraction * interval
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    moment = f"after 'step {step}/{total_steps}' + {delay:.2f} s of a {interval:.2f} s step"
    print(f"SIGKILL {moment}")  # pytest shows it with a failure
    assert process.returncode == -signal.SIGKILL, f"{moment}: exit {process.returncode}"
    return moment


def kill_and_resume(workdir, overrides, total_steps, rng):
    """Kills a run at a random moment, reruns it; asserts the rerun resumed from the newest
    complete checkpoint. Returns the rerun's output."""
    moment = kill_at_a_random_moment(workdir, overrides, total_steps, rng)
    newest = None
    if (workdir / "checkpoints").is_dir():
        checkpoints = checkpoint.Checkpointer(str(workdir), create=False)
        newest = checkpoints.latest_step()
        checkpoints.close()
    output = finish(workdir, overrides)
    if newest is None:  # killed before the first save completed: a fresh start
        assert "resumed from" not in output, moment
    else:
        expected = f"resumed from {workdir}/checkpoints at step {newest}\n"
        assert expected in output, f"{moment}: no {expected!r} in\n{output[-3000:]}"
    return output


def kill_rng(default_seed=2):
    """The seeded source of kill moments (seed 2: after steps 1 and 3 of 6); SSL_JAX_KILL_SEED
    picks another."""
    seed = int(os.environ.get("SSL_JAX_KILL_SEED", default_seed))
    print(f"kill moments from random.Random({seed})")
    return random.Random(seed)


def assert_bitwise_equal(got, want):
    leaves = jax.tree_util.tree_leaves_with_path(want)
    for (path, expected), actual in zip(leaves, jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(actual, expected, err_msg=jax.tree_util.keystr(path))


def assert_states_close(got, want, *, rtol, atol):
    """Parameters, BN statistics and ``extra`` of two train states equal within tolerances."""
    for field in ("params", "batch_stats", "extra"):
        for (path, actual), expected in zip(
            jax.tree_util.tree_leaves_with_path(getattr(got, field)),
            jax.tree.leaves(getattr(want, field)), strict=True,
        ):  # fmt: skip
            np.testing.assert_allclose(
                actual, expected, rtol=rtol, atol=atol, err_msg=field + jax.tree_util.keystr(path)
            )
