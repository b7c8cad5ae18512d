"""``store_conv_inputs``: a speed-only switch, so values and gradients must not move."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models import ResNet10
from ssl_jax.models.resnet import stored

IMAGES = jax.random.normal(jax.random.key(0), (8, 16, 16, 3))


def _model(store):
    return ResNet10(width_multiplier=0.125, stem="cifar", store_conv_inputs=store)


@pytest.fixture(scope="module")
def variables():
    return _model(False).init(jax.random.key(1), IMAGES)


def _loss_and_grads(store, variables):
    model = _model(store)

    def loss(params):
        (features, _), updates = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            IMAGES,
            mutable=["batch_stats"],
        )
        return jnp.sum(jnp.tanh(features) ** 2), updates

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])


def _compiled_text(store, variables, train):
    def forward(params):
        return _model(store).apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            IMAGES,
            train=train,
            mutable=["batch_stats"],
        )

    return jax.jit(forward).lower(variables["params"]).compile().as_text()


def test_stored_conv_inputs_leave_loss_gradients_and_bn_statistics_unchanged(variables):
    (loss_on, stats_on), grads_on = _loss_and_grads(True, variables)
    (loss_off, stats_off), grads_off = _loss_and_grads(False, variables)
    np.testing.assert_allclose(loss_on, loss_off, rtol=1e-6)
    for on, off in zip(jax.tree.leaves(grads_on), jax.tree.leaves(grads_off), strict=True):
        np.testing.assert_allclose(on, off, rtol=1e-5, atol=1e-7)
    for on, off in zip(jax.tree.leaves(stats_on), jax.tree.leaves(stats_off), strict=True):
        np.testing.assert_allclose(on, off, rtol=1e-6, atol=1e-7)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(grads_on))


def test_store_conv_inputs_adds_conditionals_only_when_training(variables):
    assert "conditional(" in _compiled_text(True, variables, train=True)
    assert "conditional(" not in _compiled_text(False, variables, train=True)
    assert "conditional(" not in _compiled_text(True, variables, train=False)
    # None: on, because these tests run on the CPU backend.
    assert jax.default_backend() == "cpu"
    assert "conditional(" in _compiled_text(None, variables, train=True)


def test_stored_is_the_identity_with_identity_gradient():
    x = jax.random.normal(jax.random.key(2), (2, 4, 4, 3))
    cotangent = jax.random.normal(jax.random.key(3), x.shape)
    np.testing.assert_array_equal(jax.jit(stored)(x), x)
    grad = jax.grad(lambda v: jnp.sum(stored(v) * cotangent))(x)
    np.testing.assert_array_equal(grad, cotangent)


def test_stored_input_with_a_nan_first_element_is_all_nan():
    x = jnp.ones((2, 4, 4, 3)).at[0, 0, 0, 0].set(jnp.nan)
    assert bool(jnp.all(jnp.isnan(jax.jit(stored)(x))))
