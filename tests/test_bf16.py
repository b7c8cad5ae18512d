"""bfloat16 mixed precision: float32 parameters, bfloat16 compute, float32 loss and softmax.

A bfloat16 SimCLR step from the same state and batch as a float32 one must give nearly the same
loss and update, and keep the parameters float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train_step import tiny_config

from ssl_jax import train
from ssl_jax.core import optim, parallel
from ssl_jax.methods import simclr


def test_bfloat16_model_computes_in_bfloat16_with_float32_params_and_outputs():
    config = tiny_config()
    config.dtype = "bfloat16"
    model = simclr.build_model(config, None)
    images = jnp.zeros((4, 12, 12, 1), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, train=False))
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}

    def apply(variables):
        encoder_variables = {name: tree["encoder"] for name, tree in variables.items()}
        _, intermediates = model.encoder.apply(encoder_variables, images, train=False)
        return intermediates, model.apply(variables, images, train=False)

    intermediates, (features, projections) = jax.eval_shape(apply, variables)
    assert {leaf.dtype for leaf in jax.tree.leaves(intermediates)} == {jnp.dtype(jnp.bfloat16)}
    # The loss sees float32 embeddings (and computes its softmax in float32).
    assert features.dtype == projections.dtype == jnp.float32


def one_step(dtype, images):
    config = tiny_config()
    config.dtype = dtype
    mesh = parallel.make_mesh(jax.devices()[:1])
    method = simclr.make(config, images.shape[1], parallel.DATA_AXIS)
    tx = optim.make_optimizer(
        "lars", optim.make_schedule(0.5, total_steps=10, warmup_steps=0), weight_decay=1e-4
    )
    state = train.create_state(method, tx, 0, {"image": images[:2]}, mesh)
    before = jax.device_get(state.params)
    batch = {"image": images, "label": np.zeros(len(images), np.int32)}
    state, metrics = train.make_train_step(method, tx, mesh)(state, parallel.to_global(batch, mesh))
    return before, jax.device_get(state.params), jax.device_get(metrics)


@pytest.mark.slow
def test_bfloat16_step_is_finite_and_close_to_float32():
    images = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 1), dtype=np.uint8)
    before32, after32, metrics32 = one_step("float32", images)
    before16, after16, metrics16 = one_step("bfloat16", images)
    for name in ("loss", "grad_norm"):
        assert np.isfinite(metrics16[name]), name
        np.testing.assert_allclose(metrics16[name], metrics32[name], rtol=5e-2, err_msg=name)
    jax.tree.map(np.testing.assert_array_equal, before16, before32)  # the same start
    assert {leaf.dtype for leaf in jax.tree.leaves(after16)} == {np.dtype(np.float32)}
    # The two updates point the same way. bf16 rounding through BatchNorm over 16 examples and
    # a temperature-0.2 softmax moves this tiny model's update by ~10% (measured 0.100).
    update32 = np.concatenate(
        [(a - b).ravel() for a, b in zip(*map(jax.tree.leaves, (after32, before32)), strict=True)]
    )
    update16 = np.concatenate(
        [(a - b).ravel() for a, b in zip(*map(jax.tree.leaves, (after16, before16)), strict=True)]
    )
    assert np.all(np.isfinite(update16))
    assert np.linalg.norm(update32) > 1e-3  # the step really moved the parameters
    relative = np.linalg.norm(update16 - update32) / np.linalg.norm(update32)
    assert relative < 0.2, relative
