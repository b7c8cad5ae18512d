"""Runs that die survive: SIGKILL and SIGTERM at step boundaries or mid-save, corrupt checkpoints,
and a workdir restarted with another config.

Kill moments are drawn over the whole run from a seeded generator and printed (SSL_JAX_KILL_SEED
picks the seed); SSL_JAX_KILL_POINTS=50 runs the kill test at 50 random moments instead of 2;
SSL_JAX_KILL_CONFIG=configs/moco_v2_fashion_mnist.py (or bert_mlm_ptb.py, byol_fashion_mnist.py,
any config) runs the SIGKILL and SIGTERM tests on another method.
"""

import json
import os
import signal

import pytest
from resume import assert_bitwise_equal, finish, kill_and_resume, kill_rng, start
from test_data import needs_fashion_mnist

from configs import simclr_fashion_mnist
from ssl_jax import train
from ssl_jax.core import checkpoint

TOTAL_STEPS = 6
OVERRIDES = [
    f"--config={os.environ.get('SSL_JAX_KILL_CONFIG', 'configs/simclr_fashion_mnist.py')}:runlocal",
    f"--config.total_steps={TOTAL_STEPS}",
    "--config.checkpoint_every_steps=1",
    "--config.keep_checkpoints=2",
    "--config.eval_every_steps=100",
]
pytestmark = [pytest.mark.slow, needs_fashion_mnist]


def wait_for(process, text):
    lines = []
    for line in process.stdout:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never printed:\n" + "".join(lines[-30:]))


def final_arrays(workdir):
    return checkpoint.Checkpointer(str(workdir)).restore_arrays(TOTAL_STEPS)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    finish(workdir, OVERRIDES)
    return final_arrays(workdir)


def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path, uninterrupted):
    rng = kill_rng()
    for index in range(int(os.environ.get("SSL_JAX_KILL_POINTS", "2"))):
        workdir = tmp_path / f"killed{index}"
        kill_and_resume(workdir, OVERRIDES, TOTAL_STEPS, rng)
        assert_bitwise_equal(final_arrays(workdir), uninterrupted)


def test_sigterm_saves_exits_cleanly_and_the_rerun_continues(tmp_path, uninterrupted):
    process = start(tmp_path, OVERRIDES)
    wait_for(process, "step 2/6")
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output[-3000:]
    assert "stopped at step" in output
    stopped = checkpoint.Checkpointer(str(tmp_path)).latest_step()
    assert stopped is not None and stopped < 6
    resumed = finish(tmp_path, OVERRIDES)
    assert f"resumed from {tmp_path}/checkpoints at step {stopped}" in resumed
    assert_bitwise_equal(final_arrays(tmp_path), uninterrupted)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_good_one(tmp_path, uninterrupted):
    finish(tmp_path, OVERRIDES)
    newest = tmp_path / "checkpoints" / str(TOTAL_STEPS)
    victims = sorted(p for p in newest.rglob("*") if p.is_file() and p.stat().st_size > 1000)
    victims[0].write_bytes(victims[0].read_bytes()[:100])  # truncated as by a crash mid-write
    output = finish(tmp_path, OVERRIDES)
    assert "checkpoint step 6" in output and "cannot be restored" in output
    assert "resumed from" in output and "at step 5" in output
    assert (tmp_path / "checkpoints" / "6.corrupt").is_dir()  # kept for inspection
    assert_bitwise_equal(final_arrays(tmp_path), uninterrupted)


def test_restarting_a_workdir_with_another_config_is_refused(tmp_path):
    config = simclr_fashion_mnist.get_config("runlocal")
    config.total_steps = 0  # records the config, trains nothing
    config.eval_every_steps = 100
    train.run(config, str(tmp_path))
    config.temperature = 0.7
    with pytest.raises(train.ConfigError, match=r"temperature: 0.2 -> 0.7.*--config.overwrite"):
        train.run(config, str(tmp_path))
    config.total_steps = 0
    config.overwrite = True
    train.run(config, str(tmp_path))
    # The workdir now records the new config, so the same config continues it without the flag.
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["temperature"] == 0.7 and recorded["overwrite"] is True
    config.overwrite = False
    train.run(config, str(tmp_path))
