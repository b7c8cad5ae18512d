"""MoCo: info_nce against NumPy, EMA and momentum schedule, queue order, shuffle BN, resume after
a SIGKILL."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from resume import assert_bitwise_equal, kill_and_resume, kill_rng
from test_data import needs_fashion_mnist
from test_losses import numeric_grad

from configs import moco_v2_fashion_mnist
from ssl_jax import losses, train
from ssl_jax.core import checkpoint, parallel
from ssl_jax.methods import moco


def numpy_info_nce(q, k, queue, temperature):
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    q, k = unit(q.astype(np.float64)), unit(k.astype(np.float64))
    if queue is None:
        logits = q @ k.T / temperature
        targets = np.arange(len(q))
    else:
        negatives = unit(queue.astype(np.float64))
        logits = np.concatenate([np.sum(q * k, 1, keepdims=True), q @ negatives.T], 1)
        logits /= temperature
        targets = np.zeros(len(q), int)
    top = logits.max(1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(1)) + top[:, 0]
    return float(np.mean(log_norm - logits[np.arange(len(q)), targets]))


@pytest.mark.parametrize("with_queue", [False, True])
def test_info_nce_values_and_grads_match_numpy(with_queue):
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(2, 5, 4))
    queue = rng.normal(size=(7, 4)) if with_queue else None
    fn = jax.jit(functools.partial(losses.info_nce, temperature=0.2))
    np.testing.assert_allclose(float(fn(q, k, queue)), numpy_info_nce(q, k, queue, 0.2), rtol=1e-5)
    grads = jax.grad(lambda a, b: fn(a, b, queue), argnums=(0, 1))(
        jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32)
    )
    np.testing.assert_allclose(
        grads[0], numeric_grad(lambda a: numpy_info_nce(a, k, queue, 0.2), q), rtol=1e-3, atol=1e-5
    )
    np.testing.assert_allclose(
        grads[1], numeric_grad(lambda b: numpy_info_nce(q, b, queue, 0.2), k), rtol=1e-3, atol=1e-5
    )


def test_sharded_info_nce_over_all_keys_equals_one_device():
    rng = np.random.default_rng(1)
    q, k = (jnp.asarray(x, jnp.float32) for x in rng.normal(size=(2, 16, 8)))
    expected, expected_grads = jax.value_and_grad(
        lambda a, b: losses.info_nce(a, b, temperature=0.2), argnums=(0, 1)
    )(q, k)

    def body(a, b):
        return jax.value_and_grad(
            lambda x, y: losses.info_nce(x, y, temperature=0.2, axis_name="data"), argnums=(0, 1)
        )(a, b)

    sharded = parallel.shard(
        body,
        parallel.make_mesh(),
        in_specs=(P("data"), P("data")),
        out_specs=(P(), (P("data"), P("data"))),
    )
    value, grads = sharded(q, k)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_ema_update_is_exact_and_momentum_follows_the_cosine_formula():
    target = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
    online = {"w": jnp.array([5.0, -2.0]), "b": jnp.array(0.0)}
    updated = moco.ema_update(target, online, jnp.float32(0.75))
    np.testing.assert_array_equal(updated["w"], np.float32([0.75 * 1 + 0.25 * 5, 0.75 * 2 - 0.5]))
    np.testing.assert_array_equal(updated["b"], np.float32(2.25))
    for step in (0, 25, 50, 100, 150):
        got = moco.momentum_at(jnp.int32(step), base=0.99, total_steps=100, cosine=True)
        want = 1 - 0.01 * (np.cos(np.pi * min(step / 100, 1.0)) + 1) / 2
        np.testing.assert_allclose(float(got), want, rtol=1e-6)
    fixed = moco.momentum_at(jnp.int32(40), base=0.999, total_steps=100, cosine=False)
    np.testing.assert_allclose(float(fixed), 0.999, rtol=1e-7)


def test_queue_holds_gathered_keys_in_global_order_and_wraps():
    """Three steps of 8 devices x 2 keys into a queue of 32: the third step wraps to the front."""
    mesh = parallel.make_mesh()

    def body(queue, pointer, keys):
        return moco.enqueue(
            queue, pointer, jax.lax.all_gather(keys, "data", tiled=True, to="invarying")
        )

    step = parallel.shard(body, mesh, in_specs=(P(), P(), P("data")), out_specs=(P(), P()))
    queue, pointer = jnp.full((32, 3), -1.0), jnp.zeros((), jnp.int32)
    expected = np.full((32, 3), -1.0, np.float32)
    for index in range(3):
        keys = np.arange(16 * 3, dtype=np.float32).reshape(16, 3) + 100 * index
        queue, pointer = step(queue, pointer, keys)
        start = (16 * index) % 32
        expected[start : start + 16] = keys  # global order: device 0's rows first
        np.testing.assert_array_equal(queue, expected)
        assert int(pointer) == (16 * (index + 1)) % 32


def subtract_group_mean(views, num_groups):
    grouped = views.reshape(num_groups, -1, views.shape[-1])
    keys = (grouped - grouped.mean(axis=1, keepdims=True)).reshape(views.shape)
    return (None, keys), {}


def test_unshuffle_restores_the_original_order_exactly():
    rows = jnp.arange(24.0).reshape(12, 2)
    identity = lambda views, num_groups: ((None, views * 1.0), {})  # noqa: E731
    keys, _ = moco.shuffled_keys(identity, rows, jax.random.PRNGKey(0), 3, None)
    np.testing.assert_array_equal(keys, rows)


def test_ghost_bn_statistics_come_from_shuffled_groups():
    rows = np.random.default_rng(2).normal(size=(12, 2)).astype(np.float32)
    rng = jax.random.PRNGKey(5)
    keys, _ = moco.shuffled_keys(subtract_group_mean, jnp.asarray(rows), rng, 3, None)
    permutation = np.asarray(jax.random.permutation(rng, 12))
    shuffled = rows[permutation].reshape(3, 4, 2)
    expected = np.empty_like(rows)
    expected[permutation] = (shuffled - shuffled.mean(1, keepdims=True)).reshape(12, 2)
    np.testing.assert_allclose(keys, expected, rtol=1e-6, atol=1e-6)
    unshuffled = rows.reshape(3, 4, 2)
    unshuffled = (unshuffled - unshuffled.mean(1, keepdims=True)).reshape(12, 2)
    assert np.abs(np.asarray(keys) - unshuffled).max() > 0.1


def test_shuffle_bn_across_devices_uses_other_devices_statistics():
    rows = np.random.default_rng(3).normal(size=(16, 2)).astype(np.float32)
    rng = jax.random.PRNGKey(7)

    def body(x):
        keys, _ = moco.shuffled_keys(subtract_group_mean, x, rng, 1, "data")
        return keys

    keys = parallel.shard(body, parallel.make_mesh(), in_specs=P("data"), out_specs=P("data"))(rows)
    permutation = np.asarray(jax.random.permutation(rng, 16))
    shuffled = rows[permutation].reshape(8, 2, 2)  # device d normalises shuffled rows 2d, 2d+1
    expected = np.empty_like(rows)
    expected[permutation] = (shuffled - shuffled.mean(1, keepdims=True)).reshape(16, 2)
    np.testing.assert_allclose(keys, expected, rtol=1e-6, atol=1e-6)


def test_queue_size_must_divide_by_the_global_batch():
    config = moco_v2_fashion_mnist.get_config("runlocal")
    config.moco.queue_size = 100
    with pytest.raises(train.ConfigError, match="moco.queue_size=100 must be a multiple of"):
        train.validate_config(config, device_count=8)


KILL_OVERRIDES = [
    "--config=configs/moco_v2_fashion_mnist.py:runlocal",
    "--config.total_steps=4",
    "--config.checkpoint_every_steps=1",
    "--config.keep_checkpoints=2",
    "--config.eval_every_steps=100",
    "--config.moco.queue_size=64",
]


@pytest.mark.slow
@needs_fashion_mnist
def test_moco_run_sigkilled_at_a_random_moment_resumes_identically(tmp_path):
    """Key encoder, its BN statistics, queue and pointer survive a SIGKILL bit for bit."""
    config = moco_v2_fashion_mnist.get_config("runlocal")
    config.total_steps = 4
    config.checkpoint_every_steps = 1
    config.eval_every_steps = 100
    config.moco.queue_size = 64  # 2 steps fill it: the resumed steps overwrite restored rows
    # The uninterrupted run keeps every step, which the key encoder's check below reads.
    config.keep_checkpoints = 4
    train.run(config, str(tmp_path / "straight"))

    kill_and_resume(tmp_path / "resumed", KILL_OVERRIDES, config.total_steps, kill_rng())

    straight_checkpoints = checkpoint.Checkpointer(str(tmp_path / "straight"))
    straight = straight_checkpoints.restore_arrays(4)
    resumed = checkpoint.Checkpointer(str(tmp_path / "resumed")).restore_arrays(4)
    assert int(resumed["extra"]["queue_ptr"]) == 0
    assert_bitwise_equal(resumed, straight)
    # The key encoder after step 4 is the EMA of its step-3 self and the step-4 query encoder.
    before = straight_checkpoints.restore_arrays(3)
    momentum = np.float32(config.moco.momentum)
    expected = jax.tree.map(
        lambda key, query: momentum * key + (np.float32(1) - momentum) * query,
        before["extra"]["key_params"],
        straight["params"],
    )
    for got, want in zip(
        jax.tree.leaves(straight["extra"]["key_params"]), jax.tree.leaves(expected), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # The two EMA inputs differ, so the check above tells momentum m from 1 - m or from 0.
    assert not np.allclose(
        jax.tree.leaves(before["extra"]["key_params"])[0], jax.tree.leaves(straight["params"])[0]
    )


@pytest.mark.slow
@needs_fashion_mnist
def test_moco_v2_learns_on_fashion_mnist(tmp_path):
    config = moco_v2_fashion_mnist.get_config("runlocal")
    config.batch_size = 64
    config.total_steps = 40
    config.moco.queue_size = 512
    config.eval_every_steps = 40
    config.log_every_steps = 10
    config.checkpoint_every_steps = 40
    config.knn.max_memory_examples = 2048
    config.knn.max_test_examples = 512
    results = train.run(config, str(tmp_path))
    assert results["knn_top1"] > results["knn_top1_init"] + 0.05, results
