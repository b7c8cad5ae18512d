"""Shared by ``test_runlocal_training_*``: each config that no other test trains trains steps
of its ``:runlocal`` variant inside the trainer (``train.run``), data pipeline, checkpoint and all.

Model, method, optimiser and augmentation fields stay as the config sets them; only the data is
swapped (a 2-class folder of colour JPEGs for the image configs, Penn Treebank for the Wikipedia
BERTs) and the compute dtype is float32 (XLA:CPU has no fast bfloat16 convolutions;
``test_runlocal_configs`` traces every config at its own dtype). Two files, so that pytest-xdist
(which hands out whole files) runs them on two workers.
"""

import importlib

import jax
import numpy as np
import pytest
import tensorflow as tf

from ssl_jax import train
from ssl_jax.core import checkpoint


@pytest.fixture(autouse=True)
def no_knn_monitor(monkeypatch):
    """The kNN monitor's programs would double each run's compile time; its own tests hold it."""
    from ssl_jax.vision import monitor

    monkeypatch.setattr(monitor.KnnMonitor, "baselines", lambda self: {})
    monkeypatch.setattr(monitor.KnnMonitor, "__call__", lambda self, method, state: {})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """``folder:`` dataset of 24 train and 8 test 72 x 72 colour JPEGs in two classes."""
    root = tmp_path_factory.mktemp("runlocal_images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 8)):
        for index in range(count):
            label = "ab"[index % 2]
            (root / split / label).mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)
            (root / split / label / f"{index}.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())
    return f"folder:{root}"


def train_steps(config, workdir, steps):
    """Runs the trainer for ``steps``; returns its results and the last saved state's arrays."""
    config.total_steps = steps
    config.batch_size = 8  # one example per device
    config.checkpoint_every_steps = 1
    config.shuffle_buffer = 16
    results = train.run(config, str(workdir))
    saver = checkpoint.Checkpointer(str(workdir), create=False)
    assert saver.latest_step() == steps
    return results, saver.restore_arrays(steps)


def assert_trained(results, saved, initial):
    assert np.isfinite(results["loss"]), results
    # The optimiser state holds the step's gradient (momentum or Adam's moments): a step that
    # backpropagated nothing leaves it all zero.
    moments = [np.abs(leaf).max() for leaf in jax.tree.leaves(saved["opt_state"])]
    assert max(moments) > 0, "no gradient reached the optimiser"
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), saved["params"], initial["params"])
    assert max(jax.tree.leaves(moved)) > 0, "the parameters never changed"


def assert_trains_two_steps(config, workdir):
    # Two steps: the first can be warm-up at learning rate 0, the second cannot.
    results, saved = train_steps(config, workdir, steps=2)
    initial = checkpoint.Checkpointer(str(workdir), create=False).restore_arrays(1)
    assert_trained(results, saved, initial)


def image_config_trains(name, folder, workdir):
    config = importlib.import_module(f"configs.{name}").get_config("runlocal")
    config.dataset = folder
    config.dtype = "float32"
    assert_trains_two_steps(config, workdir)
