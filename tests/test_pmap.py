"""The pmap driver runs the same per-device body as the shard_map driver, with the same numbers.

Both drivers take and return the same global arrays, so the trainer loop does not know which runs.
"""

import jax
import numpy as np
import pytest
from test_train_step import assert_trees_close, tiny_config

from ssl_jax import optim, parallel, train
from ssl_jax.methods import simclr


def run_steps(parallelism, images, num_steps=2):
    config = tiny_config()
    mesh = parallel.make_mesh()
    method = simclr.make(config, images.shape[1], parallel.DATA_AXIS)
    schedule = optim.make_schedule(0.5, total_steps=10, warmup_steps=1)
    tx = optim.make_optimizer("lars", schedule, weight_decay=1e-4)
    state = train.create_state(method, tx, 0, {"image": images[:2]}, mesh)
    initial = jax.device_get(state)
    step_fn = train.make_train_step(method, tx, mesh, parallelism)
    losses = []
    for step in range(num_steps):
        # A different batch each step, so the second step does not just repeat the first.
        batch = {"image": np.roll(images, step, axis=0), "label": np.zeros(len(images), np.int32)}
        state, metrics = step_fn(state, parallel.to_global(batch, mesh))
        losses.append(float(metrics["loss"]))
    # The trainer's interface: state and metrics come back replicated over the whole mesh.
    for leaf in jax.tree.leaves((state, metrics)):
        assert leaf.sharding.is_equivalent_to(parallel.replicated(mesh), leaf.ndim), leaf.sharding
    return initial, jax.device_get(state), losses


@pytest.fixture(scope="module")
def runs():
    images = np.random.default_rng(1).integers(0, 256, (16, 12, 12, 1), dtype=np.uint8)
    return {name: run_steps(name, images) for name in ("shard_map", "pmap")}


def test_pmap_driver_equals_shard_map_driver_after_two_steps(runs):
    assert jax.device_count() == 8
    initial, sharded, sharded_losses = runs["shard_map"]
    _, pmapped, pmapped_losses = runs["pmap"]
    np.testing.assert_allclose(pmapped_losses, sharded_losses, rtol=1e-6)
    assert int(pmapped.step) == int(sharded.step) == 2
    assert_trees_close(pmapped.params, sharded.params, "params", atol=1e-6)
    assert_trees_close(pmapped.opt_state, sharded.opt_state, "opt_state", atol=1e-6)
    assert_trees_close(pmapped.batch_stats, sharded.batch_stats, "batch_stats", atol=1e-6)
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), sharded.params, initial.params)
    assert max(jax.tree.leaves(moved)) > 1e-2  # the steps really changed the parameters


def test_unknown_parallelism_is_a_config_error():
    config = tiny_config()
    config.parallelism = "pjit"
    with pytest.raises(train.ConfigError, match="parallelism='pjit': use 'shard_map'"):
        train.validate_config(config, device_count=8)
