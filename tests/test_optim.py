"""Optimiser masks and schedules."""

import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import optim


def test_decay_mask_excludes_biases_and_norm_parameters():
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 1, 4))},
        "dense": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)},
        "bn": {"scale": jnp.ones(4), "bias": jnp.ones(4)},
    }
    mask = optim.decay_mask(params)
    assert mask == {
        "conv": {"kernel": True},
        "dense": {"kernel": True, "bias": False},
        "bn": {"scale": False, "bias": False},
    }


def test_lars_leaves_masked_parameters_to_plain_momentum_sgd():
    """With the bias masked, its update is -lr * grad (no decay, no trust ratio) on step one."""
    params = {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full((2,), 3.0)}
    grads = {"kernel": jnp.full((2, 2), 0.5), "bias": jnp.full((2,), 0.5)}
    tx = optim.make_optimizer("lars", lambda step: 0.1, weight_decay=0.01)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["bias"], -0.1 * 0.5 * np.ones(2), rtol=1e-6)
    # The kernel's update follows LARS: trust ratio 1e-3 * |w| / |g + wd w| on the decayed grad.
    decayed = 0.5 + 0.01 * 3.0
    trust = 1e-3 * np.linalg.norm(np.full((2, 2), 3.0)) / np.linalg.norm(np.full((2, 2), decayed))
    np.testing.assert_allclose(updates["kernel"], -0.1 * trust * decayed, rtol=1e-5)


def test_warmup_cosine_schedule_values():
    schedule = optim.make_schedule(1.0, total_steps=100, warmup_steps=10)
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(5)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(10)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(55)), 0.5 * (1 + np.cos(np.pi * 0.5)), atol=1e-6)
    np.testing.assert_allclose(float(schedule(100)), 0.0, atol=1e-7)


def test_peak_learning_rate_scaling():
    assert optim.peak_learning_rate(0.3, 4096, "linear") == pytest.approx(4.8)
    assert optim.peak_learning_rate(0.075, 4096, "sqrt") == pytest.approx(4.8)
    with pytest.raises(ValueError, match="lr_scaling"):
        optim.peak_learning_rate(0.3, 256, "cubic")
