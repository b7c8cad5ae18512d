"""Blockwise nt_xent (``chunk_size``) against the plain one and a NumPy formula, on 1 and 8 devices.

Values and gradients must agree for every block size, including ones that do not divide the
anchors (padded last block) and one block holding everything; memory must really shrink.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from test_losses import numpy_nt_xent

from ssl_jax import losses
from ssl_jax.core import parallel


def value_and_grads(z1, z2, chunk_size, axis_name=None):
    return jax.value_and_grad(
        lambda a, b: losses.nt_xent(
            a, b, temperature=0.2, axis_name=axis_name, chunk_size=chunk_size
        ),
        argnums=(0, 1),
    )(z1, z2)


def random_views(seed, n, dim):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(x, jnp.float32) for x in rng.normal(size=(2, n, dim)))


def assert_grads_close(got, want):
    for got_grad, want_grad in zip(got, want, strict=True):
        # atol: entries are sums of ~2N terms of size ~1e-2 reduced in another order.
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-7)


# 2n = 24 anchors: 1 (one anchor a block), 5 (padded last block), 24 (one block) and 100 (more
# than there are anchors).
@pytest.mark.parametrize("chunk_size", [1, 5, 24, 100])
def test_chunked_equals_naive_on_one_device(chunk_size):
    z1, z2 = random_views(0, 12, 7)
    expected_loss, expected_grads = value_and_grads(z1, z2, chunk_size=None)
    loss, grads = jax.jit(functools.partial(value_and_grads, chunk_size=chunk_size))(z1, z2)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    np.testing.assert_allclose(loss, numpy_nt_xent(z1, z2, 0.2), rtol=1e-5)
    assert_grads_close(grads, expected_grads)
    # Without differentiation the loss takes the log-sum-exp-only path.
    value = losses.nt_xent(z1, z2, temperature=0.2, chunk_size=chunk_size)
    np.testing.assert_allclose(value, expected_loss, rtol=1e-5)


def test_sharded_chunked_equals_one_device_naive():
    # 8 devices x 4 examples: 2n = 8 local anchors against 64 global candidates.
    assert jax.device_count() == 8
    z1, z2 = random_views(1, 32, 16)
    expected_loss, expected_grads = value_and_grads(z1, z2, chunk_size=None)

    def per_device(chunk_size):
        return functools.partial(
            value_and_grads, chunk_size=chunk_size, axis_name=parallel.DATA_AXIS
        )

    # 3: three blocks, the last one padded; 8: all local anchors in one block.
    for chunk_size in (3, 8):
        sharded = parallel.shard(
            per_device(chunk_size),
            parallel.make_mesh(),
            in_specs=(P("data"), P("data")),
            out_specs=(P(), (P("data"), P("data"))),
        )
        loss, grads = sharded(z1, z2)
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
        assert_grads_close(grads, expected_grads)

    # Under pmap each device differentiates its copy of the all-reduced loss: embeddings get
    # the device count times their share (the pmap driver corrects parameters' gradients).
    pmapped = jax.pmap(per_device(3), axis_name=parallel.DATA_AXIS)
    loss, grads = pmapped(z1.reshape(8, 4, 16), z2.reshape(8, 4, 16))
    np.testing.assert_allclose(loss, np.full(8, expected_loss), rtol=1e-5)
    assert_grads_close([g.reshape(32, 16) / 8 for g in grads], expected_grads)


@pytest.mark.parametrize("chunk_size", [0, -4, 2.5, True, "8"])
def test_bad_chunk_size_is_one_line_value_error(chunk_size):
    z = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="chunk_size") as error:
        losses.nt_xent(z, z, chunk_size=chunk_size)
    assert "\n" not in str(error.value)


def test_chunked_compiled_temp_memory_is_a_fraction_of_naive():
    # 2n = 2N = 2048: the plain path keeps [2048, 2048] float32 matrices (16 MiB each).
    z1, z2 = random_views(2, 1024, 32)

    def temp_bytes(chunk_size):
        fn = jax.jit(functools.partial(value_and_grads, chunk_size=chunk_size))
        return fn.lower(z1, z2).compile().memory_analysis().temp_size_in_bytes

    naive, chunked = temp_bytes(None), temp_bytes(128)
    assert naive > 16 * 2**20
    assert chunked * 8 < naive, (chunked, naive)


def test_auto_chunk_size_switches_above_the_threshold():
    threshold = losses.AUTO_CHUNK_MIN_LOGITS
    assert losses.auto_chunk_size(8192, threshold // 8192) is None
    assert losses.auto_chunk_size(8192, threshold // 8192 + 1) == losses.AUTO_CHUNK_SIZE
