"""nt_xent against an independent float64 NumPy formula, and sharded against one device."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ssl_jax import blockwise, losses
from ssl_jax.core import parallel


def numpy_nt_xent(z1, z2, temperature):
    z = np.concatenate([z1, z2]).astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    logits = z @ z.T / temperature
    np.fill_diagonal(logits, -np.inf)
    positives = (np.arange(n2) + n2 // 2) % n2
    log_norm = np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1)) + logits.max(1)
    return float(np.mean(log_norm - logits[np.arange(n2), positives]))


def numeric_grad(fn, x, eps=1e-6):
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += eps
        minus[index] -= eps
        grad[index] = (fn(plus) - fn(minus)) / (2 * eps)
    return grad


@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0])
def test_nt_xent_matches_numpy_under_jit(temperature):
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(2, 12, 7))
    loss = jax.jit(functools.partial(losses.nt_xent, temperature=temperature))(z1, z2)
    np.testing.assert_allclose(float(loss), numpy_nt_xent(z1, z2, temperature), rtol=1e-5)


def test_nt_xent_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(2, 4, 3))
    grads = jax.grad(lambda a, b: losses.nt_xent(a, b, temperature=0.3), argnums=(0, 1))(
        jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32)
    )
    expected1 = numeric_grad(lambda a: numpy_nt_xent(a, z2, 0.3), z1)
    expected2 = numeric_grad(lambda b: numpy_nt_xent(z1, b, 0.3), z2)
    np.testing.assert_allclose(grads[0], expected1, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(grads[1], expected2, rtol=1e-3, atol=1e-5)


def test_nt_xent_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        losses.nt_xent(jnp.ones((4, 3)), jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="temperature"):
        losses.nt_xent(jnp.ones((4, 3)), jnp.ones((4, 3)), temperature=0.0)


def _per_device_value_and_grads(z1, z2):
    return jax.value_and_grad(
        lambda a, b: losses.nt_xent(a, b, temperature=0.2, axis_name=parallel.DATA_AXIS),
        argnums=(0, 1),
    )(z1, z2)


def test_sharded_nt_xent_value_and_grads_equal_one_device():
    assert jax.device_count() == 8
    rng = np.random.default_rng(2)
    z1, z2 = (jnp.asarray(x, jnp.float32) for x in rng.normal(size=(2, 32, 16)))
    expected_loss, expected_grads = jax.value_and_grad(
        lambda a, b: losses.nt_xent(a, b, temperature=0.2), argnums=(0, 1)
    )(z1, z2)

    mesh = parallel.make_mesh()
    sharded = parallel.shard(
        _per_device_value_and_grads,
        mesh,
        in_specs=(P("data"), P("data")),
        out_specs=(P(), (P("data"), P("data"))),
    )
    loss, grads = sharded(z1, z2)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)

    # pmap differentiates every device's copy of the (all-reduced) loss, so each embedding's
    # gradient is the device count times its share; the pmap driver corrects replicated
    # parameters' gradients (test_loss_gradients), embeddings are what it never returns.
    pmapped = jax.pmap(_per_device_value_and_grads, axis_name=parallel.DATA_AXIS)
    loss, grads = pmapped(z1.reshape(8, 4, 16), z2.reshape(8, 4, 16))
    np.testing.assert_allclose(loss, np.full(8, expected_loss), rtol=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(got.reshape(32, 16) / 8, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_self_similarity_mask_is_finite_and_weightless(dtype):
    # The masked logits as the loss builds them, held in each compute dtype: finite (an infinite
    # mask turns a one-hot cross-entropy's 0 * log(0) into NaN), and of exactly zero weight.
    anchors = losses.l2_normalize(jax.random.normal(jax.random.key(0), (6, 8))).astype(dtype)
    own = jnp.arange(6)
    logits = blockwise._masked_logits(anchors, own, anchors, temperature=0.1).astype(dtype)
    masked = np.asarray(logits.astype(jnp.float32))[np.arange(6), np.arange(6)]
    assert np.isfinite(masked).all() and (masked <= -1e3).all(), masked
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    assert (np.asarray(probs)[np.arange(6), np.arange(6)] == 0).all()
    one_hot = jax.nn.one_hot((own + 3) % 6, 6)
    assert np.isfinite(float(-jnp.sum(one_hot * jax.nn.log_softmax(logits.astype(jnp.float32)))))
    z = jnp.eye(4, dtype=dtype)
    assert np.isfinite(float(losses.nt_xent(z, z, temperature=0.1)))
