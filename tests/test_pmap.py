"""The pmap driver runs the same per-device body as the shard_map driver, with the same numbers.

Both drivers take and return the same global arrays, so the trainer loop does not know which runs.
"""

import jax
import numpy as np
import optax
import pytest
import test_mlm
from test_train_step import assert_trees_close, tiny_config

from configs import moco_v2_fashion_mnist
from ssl_jax import train
from ssl_jax.core import optim, parallel
from ssl_jax.core.probe import OnlineProbe
from ssl_jax.methods import mlm, moco, simclr


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


def moco_with_probe():
    """MoCo v2 (queue, shuffle BN, key encoder) with the online probe: 8 devices, 2 per group."""
    config = moco_v2_fashion_mnist.get_config("runlocal")
    config.model.width_multiplier = 0.0625
    config.head.hidden_dim = 16
    config.head.output_dim = 8
    config.moco.queue_size = 32
    config.moco.bn_group_size = 2
    method = moco.make(config, 12, parallel.DATA_AXIS, total_steps=4)
    tx = optim.make_optimizer("lars", optax.constant_schedule(0.5), weight_decay=1e-4)
    rng = np.random.default_rng(1)
    batch = {
        "image": rng.integers(0, 256, (16, 12, 12, 1), dtype=np.uint8),
        "label": rng.integers(0, 10, 16).astype(np.int32),
    }
    return method, tx, batch, OnlineProbe(num_classes=10, tx=optax.adam(1e-2))


def mlm_plain():
    method = mlm.make(test_mlm.tiny_config(), None, parallel.DATA_AXIS, vocab=test_mlm.VOCAB)
    # Adam moves every entry by ~lr in its first steps, rounding-level gradients (attention key
    # biases, which softmax ignores) included: a small rate keeps those within the tolerance.
    tx = optim.make_optimizer("adamw", optax.constant_schedule(1e-3), weight_decay=0.01)
    rng = np.random.default_rng(6)
    ids = test_mlm.random_sequences(rng, 16, 16, pad_max=6)
    batch = {
        "token_ids": ids,
        "segment_ids": np.zeros_like(ids),
        "word_starts": rng.random(ids.shape) < 0.7,
    }
    return method, tx, batch, None


@pytest.mark.parametrize("build", [moco_with_probe, mlm_plain], ids=["moco_probe", "mlm"])
def test_pmap_driver_equals_shard_map_driver_for_moco_probe_and_mlm(build):
    method, tx, batch, probe = build()
    mesh = parallel.make_mesh()
    results = {}
    for parallelism in ("shard_map", "pmap"):
        state = train.create_state(method, tx, 0, batch, mesh, probe)
        initial = jax.device_get(state)
        step_fn = train.make_train_step(method, tx, mesh, parallelism, probe=probe)
        metrics = []
        for step in range(2):
            rolled = jax.tree.map(lambda x, step=step: np.roll(x, step, axis=0), batch)
            state, step_metrics = step_fn(state, parallel.to_global(rolled, mesh))
            metrics.append(jax.device_get(step_metrics))
        results[parallelism] = jax.device_get(state), metrics
    (sharded, sharded_metrics), (pmapped, pmapped_metrics) = results["shard_map"], results["pmap"]
    for got, want in zip(pmapped_metrics, sharded_metrics, strict=True):
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # Every part of the state: the key encoder and queue, the probe, Adam's moments.
    assert_trees_close(pmapped, sharded, "state", atol=1e-5)
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), sharded.params, initial.params)
    assert max(jax.tree.leaves(moved)) > 1e-3
    if probe is not None:
        assert np.abs(sharded.probe["params"]["kernel"]).max() > 1e-3
