"""A whole SimCLR train step on 8 devices equals the same step on one device with the global batch.

This covers gradients through the all-gather, global BatchNorm statistics, the gradient sum across
devices and sharding-independent augmentations.
"""

import jax
import numpy as np
import pytest

from configs import simclr_fashion_mnist
from ssl_jax import train
from ssl_jax.core import optim, parallel
from ssl_jax.methods import simclr


def tiny_config():
    config = simclr_fashion_mnist.get_config("runlocal")
    config.model.width_multiplier = 0.0625
    config.head.hidden_dim = 16
    config.head.output_dim = 8
    config.temperature = 0.2
    return config


def run_steps(devices, images, num_steps):
    config = tiny_config()
    mesh = parallel.make_mesh(devices)
    method = simclr.make(config, images.shape[1], parallel.DATA_AXIS)
    schedule = optim.make_schedule(0.5, total_steps=10, warmup_steps=1)
    tx = optim.make_optimizer("lars", schedule, weight_decay=1e-4)
    state = train.create_state(method, tx, 0, {"image": images[:2]}, mesh)
    states, losses = [jax.device_get(state)], []
    step_fn = train.make_train_step(method, tx, mesh)
    batch = {"image": images, "label": np.zeros(len(images), np.int32)}
    for _ in range(num_steps):
        state, metrics = step_fn(state, parallel.to_global(batch, mesh))
        states.append(jax.device_get(state))
        losses.append(float(metrics["loss"]))
    return states, losses


@pytest.fixture(scope="module")
def runs():
    images = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 1), dtype=np.uint8)
    return run_steps(jax.devices(), images, 2), run_steps(jax.devices()[:1], images, 2)


def assert_trees_close(got_tree, want_tree, name, atol):
    leaves = jax.tree_util.tree_leaves_with_path(got_tree)
    for (path, got), want in zip(leaves, jax.tree.leaves(want_tree), strict=True):
        message = f"{name}{jax.tree_util.keystr(path)}"
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol, err_msg=message)


def test_sharded_steps_equal_one_device_on_global_batch(runs):
    (sharded_states, sharded_losses), (single_states, single_losses) = runs
    assert jax.device_count() == 8
    np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5)
    sharded, single = sharded_states[-1], single_states[-1]
    assert int(sharded.step) == int(single.step) == 2
    # atol: float32 reduction order differs between one and eight devices (sums of ~1e-1 terms).
    assert_trees_close(sharded.params, single.params, "params", atol=1e-5)
    assert_trees_close(sharded.opt_state, single.opt_state, "opt_state", atol=1e-5)
    # The steps really moved the parameters, so this is not a comparison of two inits.
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), single.params, single_states[0].params)
    assert max(jax.tree.leaves(moved)) > 1e-2


def test_global_batch_norm_statistics_equal_one_device(runs):
    (sharded_states, _), (single_states, _) = runs
    for sharded, single in zip(sharded_states[1:], single_states[1:], strict=True):
        assert_trees_close(sharded.batch_stats, single.batch_stats, "batch_stats", atol=1e-6)
    # Statistics were really updated from their initial zeros / ones.
    assert np.abs(single_states[1].batch_stats["encoder"]["stem_bn"]["mean"]).max() > 1e-4
