"""``models.conv``: CPU-only rewrites of convolutions, so values and gradients must not move."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ssl_jax.models import ResNet10
from ssl_jax.models.conv import conv3x3_stride2, cpu_conv_general_dilated, stored

IMAGES = jax.random.normal(jax.random.key(0), (8, 16, 16, 3))
NHWC = ("NHWC", "HWIO", "NHWC")


def _model(rewrites):
    return ResNet10(width_multiplier=0.125, stem="cifar", cpu_conv_rewrites=rewrites)


@pytest.fixture(scope="module")
def variables():
    return _model(False).init(jax.random.key(1), IMAGES)


def _loss_and_grads(rewrites, variables):
    """Jitted ``params -> ((loss, batch_stats updates), gradients)`` of a training pass."""
    model = _model(rewrites)

    def loss(params):
        (features, _), updates = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            IMAGES,
            mutable=["batch_stats"],
        )
        return jnp.sum(jnp.tanh(features) ** 2), updates

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def _compiled_text(rewrites, variables, train):
    def forward(params):
        return _model(rewrites).apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            IMAGES,
            train=train,
            mutable=["batch_stats"],
        )

    return jax.jit(forward).lower(variables["params"]).compile().as_text()


def test_rewritten_resnet_has_the_same_loss_gradients_and_bn_statistics(variables):
    (loss_on, stats_on), grads_on = _loss_and_grads(True, variables)(variables["params"])
    (loss_off, stats_off), grads_off = _loss_and_grads(False, variables)(variables["params"])
    np.testing.assert_allclose(loss_on, loss_off, rtol=1e-6)
    for on, off in zip(jax.tree.leaves(grads_on), jax.tree.leaves(grads_off), strict=True):
        np.testing.assert_allclose(on, off, rtol=1e-4, atol=1e-6)
    for on, off in zip(jax.tree.leaves(stats_on), jax.tree.leaves(stats_off), strict=True):
        np.testing.assert_allclose(on, off, rtol=1e-6, atol=1e-7)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(grads_on))


def test_rewrites_remove_every_dilated_input_gradient(variables):
    def gradient_text(rewrites):
        step = _loss_and_grads(rewrites, variables)
        return step.lower(variables["params"]).compile().as_text()

    # Stages 2-4 start with stride-2 convolutions, whose input gradients XLA dilates.
    assert gradient_text(False).count("lhs_dilate") > 0
    assert gradient_text(True).count("lhs_dilate") == 0


def test_rewrites_add_conditionals_only_when_training(variables):
    assert "conditional(" in _compiled_text(True, variables, train=True)
    assert "conditional(" not in _compiled_text(False, variables, train=True)
    assert "conditional(" not in _compiled_text(True, variables, train=False)
    # None: on, because these tests run on the CPU backend.
    assert jax.default_backend() == "cpu"
    assert "conditional(" in _compiled_text(None, variables, train=True)


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_rewrites_default_off_on_accelerators(variables, monkeypatch, backend):
    # What the model traces when JAX reports an accelerator: the plain convolutions.
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert "conditional(" not in _compiled_text(None, variables, train=True)


@pytest.mark.parametrize("size", [8, 6])
def test_conv3x3_stride2_values_and_both_gradients_equal_lax(size):
    x = jax.random.normal(jax.random.key(2), (3, size, size, 5))
    kernel = jax.random.normal(jax.random.key(3), (3, 3, 5, 7))
    cotangent = jax.random.normal(jax.random.key(4), (3, size // 2, size // 2, 7))

    def reference(x, kernel):
        return lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=NHWC)

    def pullback(fn):
        y, vjp = jax.vjp(fn, x, kernel)
        return (y, *vjp(cotangent))

    for got, want in zip(pullback(conv3x3_stride2), pullback(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_rewrite_covers_strided_1x1_and_leaves_other_convolutions_to_lax():
    x = jax.random.normal(jax.random.key(5), (2, 7, 7, 4))
    for kernel_size, strides in [(1, (2, 2)), (1, (3, 3)), (3, (1, 1)), (3, (2, 2))]:
        kernel = jax.random.normal(jax.random.key(6), (kernel_size, kernel_size, 4, 6))

        def conv(x, kernel, fn, strides=strides):
            return fn(x, kernel, strides, "SAME", dimension_numbers=NHWC)

        got = jax.grad(lambda x, k: jnp.sum(conv(x, k, cpu_conv_general_dilated) ** 2), (0, 1))
        want = jax.grad(lambda x, k: jnp.sum(conv(x, k, lax.conv_general_dilated) ** 2), (0, 1))
        np.testing.assert_allclose(
            conv(x, kernel, cpu_conv_general_dilated),
            conv(x, kernel, lax.conv_general_dilated),
            rtol=1e-5,
            atol=1e-5,
        )
        for g, w in zip(got(x, kernel), want(x, kernel), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)


def test_stored_is_the_identity_with_identity_gradient():
    x = jax.random.normal(jax.random.key(2), (2, 4, 4, 3))
    cotangent = jax.random.normal(jax.random.key(3), x.shape)
    np.testing.assert_array_equal(jax.jit(stored)(x), x)
    grad = jax.grad(lambda v: jnp.sum(stored(v) * cotangent))(x)
    np.testing.assert_array_equal(grad, cotangent)


def test_stored_input_with_a_nan_first_element_is_all_nan():
    x = jnp.ones((2, 4, 4, 3)).at[0, 0, 0, 0].set(jnp.nan)
    assert bool(jnp.all(jnp.isnan(jax.jit(stored)(x))))
