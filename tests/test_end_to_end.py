"""Pretraining through the real entry points on real Fashion-MNIST: learns, checkpoints, resumes."""

import glob
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from test_data import needs_fashion_mnist

from configs import simclr_fashion_mnist
from ssl_jax import train
from ssl_jax.core import checkpoint, events, loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def logged_scalars(workdir, tag):
    steps, values = events.read_scalars(workdir)[tag]
    return dict(zip(steps.tolist(), values.tolist(), strict=True))


@pytest.mark.slow
@needs_fashion_mnist
def test_trains_then_resumes_from_the_saved_step(tmp_path):
    config = simclr_fashion_mnist.get_config("runlocal")
    config.batch_size = 64
    config.total_steps = 16
    config.checkpoint_every_steps = 8
    config.eval_every_steps = 16
    config.learning_rate = 1.0
    config.profile_steps = 2
    workdir = str(tmp_path)
    results = train.run(config, workdir)
    assert glob.glob(os.path.join(workdir, "profile", "plugins", "profile", "*", "*.xplane.pb"))
    # Training beats the random initialisation on the kNN monitor (measured on 256 test images:
    # 0.258 -> 0.402); a learning rate of 0, or the loss's sign flipped, does not.
    assert results["knn_top1"] > results["knn_top1_init"] + 0.08, results
    losses = logged_scalars(workdir, "loss")
    assert sorted(losses) == list(range(1, 17))
    first, last = (
        np.mean([losses[s] for s in range(1, 5)]),
        np.mean([losses[s] for s in range(13, 17)]),
    )
    assert last < first - 0.2, losses  # measured: 5.01 -> 4.40
    assert set(results) == {"knn_pixel_baseline", "knn_top1_init", "knn_top1", "loss"}
    assert 0.1 < results["knn_pixel_baseline"] <= 1.0
    assert checkpoint.Checkpointer(workdir).latest_step() == 16

    config.total_steps = 18
    resumed = train.run(config, workdir)
    assert "knn_top1_init" not in resumed  # it continued; a restart would evaluate the init
    assert checkpoint.Checkpointer(workdir).latest_step() == 18
    assert sorted(logged_scalars(workdir, "loss")) == list(range(1, 19))


def run_main(*args, workdir):
    command = [sys.executable, "-m", "ssl_jax.main", f"--workdir={workdir}", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.batch_size=30", "batch_size=30 must be a positive multiple of the 8 devices"),
        ("--config.model.name=resnet19", "model.name='resnet19' must be one of 'resnet10'"),
        ("--config.dataset=cifar11", "unknown dataset 'cifar11'"),
        ("--config.temperature=0.0", "temperature=0.0 must be > 0"),
        ("--config.method=byol2", "unknown method 'byol2'"),
    ],
)
def test_bad_config_fails_early_with_one_line(tmp_path, override, message):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "keep.txt").write_text("earlier work")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = run_main(
        "--config=configs/simclr_fashion_mnist.py:runlocal", override, workdir=tmp_path
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and message in last_line, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_missing_dataset_names_the_install_command(tmp_path, monkeypatch):
    config = simclr_fashion_mnist.get_config("runlocal")
    config.data_dir = str(tmp_path / "empty_tfds_dir")
    with pytest.raises(train.ConfigError, match="apt-get install -y dataset-fashion-mnist"):
        train.validate_config(config, device_count=8)


@pytest.mark.slow
@needs_fashion_mnist
@pytest.mark.parametrize(
    "learning_rate, last_finite_step",
    [
        # Step 1's update is finite; step 2 overflows the parameters (its loss may still be
        # finite, or already NaN: which depends on float rounding).
        (1e30, 1),
        # The first update overflows while its loss (81) and gradient norm (93.5) are finite:
        # only a check of the new state keeps it out of the checkpoint.
        (3e38, None),
    ],
)
def test_diverging_run_stops_with_a_clear_message_and_keeps_a_finite_checkpoint(
    tmp_path, learning_rate, last_finite_step
):
    config = simclr_fashion_mnist.get_config("runlocal")
    config.total_steps = 6
    config.checkpoint_every_steps = 1
    config.optimizer = "sgd"
    config.learning_rate = learning_rate
    config.lr_scaling = "none"
    failing_step = (last_finite_step or 0) + 1
    with pytest.raises(
        FloatingPointError,
        match=f"(step {failing_step} made [1-9][0-9]* arrays of the state non-finite|"
        f"non-finite metrics at step {failing_step}:).*lower learning_rate",
    ):
        train.run(config, str(tmp_path))
    # The failed run closed its process log: its handler left the root logger.
    assert loop.ProcessLogs._active is None
    checkpoints = checkpoint.Checkpointer(str(tmp_path))
    assert checkpoints.latest_step() == last_finite_step
    if last_finite_step is not None:
        leaves = jax.tree.leaves(checkpoints.restore_arrays(last_finite_step))
        floating = [leaf for leaf in leaves if np.issubdtype(leaf.dtype, np.inexact)]
        assert floating and all(np.isfinite(leaf).all() for leaf in floating)


@pytest.mark.slow
def test_mlm_trains_through_the_same_trainer(tmp_path):
    from configs import bert_mlm_ptb
    from ssl_jax import tasks

    config = bert_mlm_ptb.get_config("runlocal")
    if tasks.of_method(config.method).problem(config):
        pytest.skip(f"{tasks.of_method(config.method).problem(config)} (.ci/run prepares it)")
    config.batch_size = 32
    config.total_steps = 30
    config.warmup_steps = 3
    config.eval_every_steps = 30
    config.log_every_steps = 10
    config.checkpoint_every_steps = 10
    results = train.run(config, str(tmp_path / "straight"))
    assert results["eval_mlm_loss"] < results["eval_mlm_loss_init"] - 0.5, results
    assert results["eval_mlm_accuracy"] > results["eval_mlm_accuracy_init"], results
    assert 0 < results["eval_most_frequent_token_accuracy"] < 0.2
    assert checkpoint.Checkpointer(str(tmp_path / "straight")).latest_step() == 30

    # Its resume (masks, dropout, data position, AdamW state) is held by a real SIGKILL in
    # tests/test_mlm.py.
