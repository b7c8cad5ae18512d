"""Orbax round trip of a TrainState, including while the trainer donates the saved buffers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax import checkpoint, parallel
from ssl_jax.state import TrainState


def make_state(mesh):
    params = {"dense": {"kernel": jnp.arange(12.0).reshape(3, 4), "bias": jnp.ones(4)}}
    tx = optax.lars(0.1)
    state = TrainState(
        step=jnp.array(7, jnp.int32),
        params=params,
        batch_stats={"bn": {"mean": jnp.full(4, 0.5)}},
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(3),
    )
    return jax.device_put(state, parallel.replicated(mesh))


def test_async_save_survives_donation_of_the_saved_state(tmp_path):
    mesh = parallel.make_mesh()
    state = make_state(mesh)
    expected = jax.device_get(state)
    checkpoints = checkpoint.Checkpointer(str(tmp_path))
    checkpoints.save(7, state)

    def overwrite(tree):
        return jax.tree.map(lambda x: x * 0 + 99 if x.dtype != jnp.uint32 else x, tree)

    state = jax.jit(overwrite, donate_argnums=0)(state)  # may reuse the saved buffers
    jax.block_until_ready(state)
    checkpoints.close()

    restored = checkpoint.Checkpointer(str(tmp_path)).restore(checkpoint.abstract_like(state))
    assert int(restored.step) == 7
    for want, got in zip(jax.tree.leaves(expected), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)
    assert restored.params["dense"]["kernel"].sharding == state.params["dense"]["kernel"].sharding


def test_keeps_only_the_newest_checkpoints(tmp_path):
    mesh = parallel.make_mesh()
    state = make_state(mesh)
    checkpoints = checkpoint.Checkpointer(str(tmp_path), max_to_keep=2)
    for step in (1, 2, 3):
        checkpoints.save(step, state)
    checkpoints.close()
    reopened = checkpoint.Checkpointer(str(tmp_path))
    assert reopened.latest_step() == 3
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [
        "2",
        "3",
    ]
