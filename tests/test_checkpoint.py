"""Orbax round trip of a TrainState, including while the trainer donates the saved buffers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_jax import checkpoint, parallel, storage
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


def test_a_save_cut_short_never_costs_the_last_good_checkpoint(tmp_path):
    mesh = parallel.make_mesh()
    state = make_state(mesh)
    checkpoints = checkpoint.Checkpointer(str(tmp_path), max_to_keep=1, async_save=False)
    for step in (1, 2):
        checkpoints.save(step, state)
    checkpoints.close()
    # What a process killed while writing step 3 leaves: a temporary folder with part of it.
    partial = tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-1795000000"
    (partial / "default").mkdir(parents=True)
    (partial / "default" / "_METADATA").write_text('{"tree_metadata": {')

    reopened = checkpoint.Checkpointer(str(tmp_path), max_to_keep=1, async_save=False)
    restored = reopened.restore_newest_good(checkpoint.abstract_like(state))
    assert reopened.latest_step() == 2 and int(restored.step) == 7
    # Keep-1 removes step 2 only once step 3 is complete.
    reopened.save(3, state)
    reopened.close()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["3"]


def test_the_only_checkpoint_being_corrupt_is_set_aside_not_deleted(tmp_path):
    mesh = parallel.make_mesh()
    state = make_state(mesh)
    checkpoints = checkpoint.Checkpointer(str(tmp_path), max_to_keep=1, async_save=False)
    checkpoints.save(5, state)
    checkpoints.close()
    for path in (tmp_path / "checkpoints" / "5").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "METADATA" not in path.name:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    reopened = checkpoint.Checkpointer(str(tmp_path), max_to_keep=1, async_save=False)
    assert reopened.restore_newest_good(checkpoint.abstract_like(state)) is None
    assert (tmp_path / "checkpoints" / "5.corrupt").is_dir()
    reopened.close()


@pytest.mark.parametrize(
    "failure",
    [
        PermissionError(13, "Permission denied"),
        TimeoutError("read timed out"),
        ValueError("PERMISSION_DENIED: HTTP response code: 403 with body: Forbidden"),
        ValueError("UNAUTHENTICATED: no credentials"),
    ],
    ids=["permission", "timeout", "tensorstore_403", "credentials"],
)
def test_storage_that_cannot_be_reached_raises_and_sets_nothing_aside(
    tmp_path, monkeypatch, failure
):
    mesh = parallel.make_mesh()
    state = make_state(mesh)
    checkpoints = checkpoint.Checkpointer(str(tmp_path), async_save=False)
    checkpoints.save(5, state)
    checkpoints.close()
    reopened = checkpoint.Checkpointer(str(tmp_path), async_save=False)

    def unreachable(*args, **kwargs):
        raise failure

    monkeypatch.setattr(reopened._manager, "restore", unreachable)
    with pytest.raises(storage.StorageError, match=r"^cannot read checkpoint step 5 in .*rerun\.$"):
        reopened.restore_newest_good(checkpoint.abstract_like(state))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["5"]
    reopened.close()
