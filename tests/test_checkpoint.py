"""Orbax round trip of a TrainState, including while the trainer donates the saved buffers, a save
killed in flight, and Orbax's replica-parallel writes restored on other device counts."""

import os
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from resume import REPO, assert_bitwise_equal

from ssl_jax.core import checkpoint, parallel, storage
from ssl_jax.core.state import TrainState


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


def state_at(step, mesh):
    """A few MB of state whose every value tells the step that saved it."""
    params = {
        f"w{i}": jnp.arange(256 * 1024, dtype=jnp.float32) + 1000 * step + i for i in range(4)
    }
    state = {"step": jnp.array(step, jnp.int32), "params": params}
    return jax.device_put(state, parallel.replicated(mesh))


def save_until_killed(directory, keep, async_save):
    """The child of the kill test: saves step after step, from the newest complete one on."""
    mesh = parallel.make_mesh()
    checkpoints = checkpoint.Checkpointer(directory, max_to_keep=keep, async_save=async_save)
    for step in range((checkpoints.latest_step() or 0) + 1, 100_000):
        print(f"saving {step}", flush=True)
        checkpoints.save(step, state_at(step, mesh))


def kill_while_saving(directory, keep, async_save, rng):
    """Starts ``save_until_killed`` and SIGKILLs it at a random moment of a later save."""
    command = [sys.executable, __file__, str(directory), str(keep), str(int(async_save))]
    env = dict(os.environ, PYTHONPATH=REPO)
    child = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    saves_to_see, times, lines = rng.randint(3, 6), [], []
    for line in child.stdout:
        lines.append(line)
        if line.startswith("saving"):
            times.append(time.monotonic())
            if len(times) == saves_to_see:
                break
    else:
        raise AssertionError("".join(lines[-30:]))
    delay = rng.random() * (times[-1] - times[-2])  # up to one save interval into the next save
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    moment = f"{lines[-1].strip()} + {delay:.3f} s (async {async_save})"
    print(f"SIGKILL {moment}")
    assert child.returncode == -signal.SIGKILL, moment
    return moment


@pytest.mark.slow
def test_a_save_killed_in_flight_never_costs_the_last_complete_checkpoint(tmp_path):
    """Real Orbax saves with keep-2, SIGKILLed mid-save twice (async, then sync) in one folder."""
    mesh = parallel.make_mesh()
    keep, rng = 2, random.Random(1)
    for async_save in (True, False):
        moment = kill_while_saving(tmp_path, keep, async_save, rng)
        names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
        reopened = checkpoint.Checkpointer(str(tmp_path), max_to_keep=keep, async_save=False)
        complete = reopened.all_steps()
        assert complete, (moment, names)
        newest = complete[-1]
        # Keep-N deletes an old step only once the new one is complete: the newest `keep`
        # steps are all there, whatever moment the kill hit.
        assert set(range(newest - keep + 1, newest + 1)) <= set(complete), (moment, names)
        restored = reopened.restore_newest_good(checkpoint.abstract_like(state_at(0, mesh)))
        assert int(restored["step"]) == newest, (moment, names)
        for step in complete:
            tree = reopened.restore(checkpoint.abstract_like(state_at(0, mesh)), step)
            assert_bitwise_equal(tree, jax.device_get(state_at(step, mesh)))
        # Whatever the kill left half-written is no checkpoint and was not set aside as one.
        assert not any(name.endswith(".corrupt") for name in names)
        assert all(name.isdigit() or "tmp" in name for name in names), names
        print(moment, "left", names)
        reopened.close()


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


RESTORE_ON_FOUR_DEVICES = """
import sys
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from ssl_jax.core import checkpoint, parallel

mesh = parallel.make_mesh()
assert mesh.size == 4, mesh
checkpoints = checkpoint.Checkpointer(sys.argv[1])
one = checkpoints.restore_arrays()
abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.replicated(mesh)), one
)
sharded = NamedSharding(mesh, P(parallel.DATA_AXIS))
abstract["sharded"] = jax.ShapeDtypeStruct(one["sharded"].shape, one["sharded"].dtype,
                                           sharding=sharded)
four = checkpoints.restore(abstract)
assert four["sharded"].sharding == sharded and len(four["sharded"].addressable_shards) == 4
def host(value):  # bfloat16 as its bits: np.savez keeps no bfloat16
    value = np.asarray(value)
    return value.view(np.uint16) if value.dtype.name == "bfloat16" else value
arrays = {f"{name}/{key}": host(value) for name, tree in (("one", one), ("four", four))
          for key, value in tree.items()}
np.savez(sys.argv[2], **arrays)
"""


def replica_parallel_tree(mesh):
    rng = np.random.default_rng(5)
    replicated = {
        "divisible": rng.normal(size=(16, 8)).astype(np.float32),  # split over the 8 replicas
        "indivisible": rng.normal(size=(3, 5)).astype(np.float32),  # written by one replica
        "bfloat16": rng.normal(size=(8, 4)).astype(jnp.bfloat16),
        "step": np.int32(11),
    }
    tree = jax.device_put(replicated, parallel.replicated(mesh))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(parallel.DATA_AXIS))
    tree["sharded"] = jax.device_put(rng.normal(size=(16, 3)).astype(np.float32), sharding)
    return tree


@pytest.mark.slow
def test_replica_parallel_saves_of_accelerators_restore_bitwise_on_4_and_1_devices(
    tmp_path, monkeypatch
):
    """The save path off CPU: Orbax's own handler splits each replicated array over replicas."""
    from orbax.checkpoint._src.serialization import replica_slices

    handler = ocp.type_handlers.get_type_handler(jax.Array)  # earlier tests may have swapped it
    sliced = []

    def spy(arr, replica_id, use_replica_parallel, *args, **kwargs):
        result = real_slices(arr, replica_id, use_replica_parallel, *args, **kwargs)
        if any(s.slice_args is not None for s in result.replica_slices):
            sliced.append(arr.shape)
        return result

    real_slices = replica_slices.get_replica_slices
    monkeypatch.setattr(replica_slices, "get_replica_slices", spy)
    try:
        # What a fresh process registers, then what Checkpointer does with it on a GPU.
        ocp.type_handlers.register_type_handler(
            jax.Array,
            ocp.type_handlers.ArrayHandler(
                array_metadata_store=getattr(handler, "_array_metadata_store", None)
            ),
            override=True,
        )
        with monkeypatch.context() as patch:
            patch.setattr(jax, "default_backend", lambda: "gpu")
            checkpoints = checkpoint.Checkpointer(str(tmp_path), async_save=False)
        mesh = parallel.make_mesh()
        tree = replica_parallel_tree(mesh)
        checkpoints.save(11, tree)
        checkpoints.close()
    finally:
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    assert (16, 8) in sliced and (3, 5) not in sliced, sliced

    out = tmp_path / "restored.npz"
    flags = os.environ.get("XLA_FLAGS", "").replace(
        "--xla_force_host_platform_device_count=8", "--xla_force_host_platform_device_count=4"
    )
    env = dict(os.environ, XLA_FLAGS=flags, PYTHONPATH=REPO)
    command = [sys.executable, "-c", RESTORE_ON_FOUR_DEVICES, str(tmp_path), str(out)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    restored = np.load(out)
    expected = jax.device_get(tree)
    for devices in ("one", "four"):
        for key, want in expected.items():
            want = np.asarray(want)
            want = want.view(np.uint16) if key == "bfloat16" else want
            got = restored[f"{devices}/{key}"]
            assert got.dtype == want.dtype, (devices, key, got.dtype)
            np.testing.assert_array_equal(got, want, err_msg=f"{devices}/{key}")


if __name__ == "__main__":
    save_until_killed(sys.argv[1], int(sys.argv[2]), bool(int(sys.argv[3])))
