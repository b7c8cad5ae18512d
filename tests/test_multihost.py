"""Two processes × four CPU devices through ``python -m ssl_jax.main`` against one 8-device process.

Also the start-up failures: a coordinator that never answers, processes that never join or
disagree on ``--num_processes``, and a batch that does not divide over all processes' devices.
"""

import glob
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import optax
import pytest
from test_data import needs_fashion_mnist
from test_train_step import assert_trees_close

from configs import simclr_fashion_mnist
from ssl_jax import train
from ssl_jax.core import checkpoint, optim, parallel
from ssl_jax.core.probe import OnlineProbe
from ssl_jax.methods import simclr
from ssl_jax.vision import data as images

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_PROCESSES = 2
BATCH_SIZE = 16
OVERRIDES = {
    "batch_size": BATCH_SIZE,
    "learning_rate": 2.0,
    "model.width_multiplier": 0.0625,
    "head.hidden_dim": 16,
    "head.output_dim": 8,
    "knn.max_memory_examples": 64,
    "knn.max_test_examples": 32,
    "knn.batch_size": 32,
    "checkpoint_every_steps": 2,
}

# Loaded by every child through PYTHONPATH: records each process's copy of the parameters on each
# of its devices whenever the trainer saves, so the test sees every replica, not only the one
# Orbax writes. Nothing else in the entry point changes.
HOOK = """
import os
import numpy as np
import jax
from ssl_jax.core import checkpoint

_save = checkpoint.Checkpointer.save


def save(self, step, state):
    arrays = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
        for shard in leaf.addressable_shards:
            arrays[f"{jax.tree_util.keystr(path)}@{shard.device.id}"] = np.asarray(shard.data)
    name = f"params_step{step}_process{jax.process_index()}.npz"
    np.savez(os.path.join(os.environ["SSL_JAX_TEST_DUMPS"], name), **arrays)
    return _save(self, step, state)


checkpoint.Checkpointer.save = save
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def tiny_config(total_steps):
    config = simclr_fashion_mnist.get_config("runlocal")
    for name, value in OVERRIDES.items():
        parent, _, leaf = name.rpartition(".")
        setattr(config[parent] if parent else config, leaf, value)
    config.total_steps = total_steps
    return config


def launch(
    workdir, *flags, counts=(NUM_PROCESSES,) * NUM_PROCESSES, process_ids=None, env_extra=None
):
    """Runs ``python -m ssl_jax.main`` as processes of one run; returns (rc, log) of each.

    ``counts[i]`` is the ``--num_processes`` the i-th process is given, ``process_ids[i]`` (by
    default i) its ``--process_id``.
    """
    port = free_port()
    xla_flags = [
        f for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]  # fmt: skip
    xla_flags.append("--xla_force_host_platform_device_count=4")
    env = dict(os.environ, XLA_FLAGS=" ".join(xla_flags), **env_extra or {})
    children = []
    for process_id, count in zip(process_ids or range(len(counts)), counts, strict=True):
        command = [
            sys.executable, "-m", "ssl_jax.main", f"--workdir={workdir}",
            "--config=configs/simclr_fashion_mnist.py:runlocal",
            f"--coordinator_address=localhost:{port}", f"--num_processes={count}",
            f"--process_id={process_id}", *flags,
        ]  # fmt: skip
        log = open(os.path.join(workdir, f"process{process_id}.log"), "w+")  # noqa: SIM115
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        children.append((child, log))
    results = []
    for child, log in children:
        try:
            child.wait(timeout=400)
        finally:
            child.kill()  # a no-op once it has exited; never leaves a stray process behind
        log.seek(0)
        results.append((child.returncode, log.read()))
        log.close()
    return results


def train_flags(total_steps):
    return [f"--config.{name}={value}" for name, value in OVERRIDES.items()] + [
        f"--config.total_steps={total_steps}",
        "--initialization_timeout=120",
    ]


def params_dumps(dumps, step):
    """{process: {leaf@device: array}} as the hook wrote them at ``step``."""
    return {
        process: dict(np.load(os.path.join(dumps, f"params_step{step}_process{process}.npz")))
        for process in range(NUM_PROCESSES)
    }


def assert_every_replica_identical(dumps, step):
    """All 8 device copies, across both processes, hold bitwise the same parameters."""
    per_process = params_dumps(dumps, step)
    first = per_process[0]
    leaf_names = {name.split("@")[0] for name in first}
    for process, arrays in per_process.items():
        assert len(arrays) == 4 * len(leaf_names), sorted(arrays)[:5]
        for name, value in arrays.items():
            reference = first[f"{name.split('@')[0]}@0"]
            np.testing.assert_array_equal(value, reference, err_msg=f"process {process} {name}")
    return {name.split("@")[0]: value for name, value in first.items() if name.endswith("@0")}


def reference_run(total_steps):
    """One process, eight devices, fed the global batches the two processes assemble together."""
    config = tiny_config(total_steps)
    dataset = images.describe(config.dataset)
    mesh = parallel.make_mesh()
    steps_per_epoch = images.num_examples(dataset, dataset.train_split) // BATCH_SIZE
    assert config.batch_size == BATCH_SIZE
    _, tx = optim.from_config(config, total_steps, int(config.warmup_epochs * steps_per_epoch))
    method = simclr.make(config, dataset.image_size, parallel.DATA_AXIS)
    local_batch_size = BATCH_SIZE // NUM_PROCESSES
    sample = np.zeros((local_batch_size, 28, 28, 1), np.uint8)
    # The run trains the online probe too (its own gradient; part of the saved state).
    probe = OnlineProbe(dataset.num_classes, optax.adam(config.probe.learning_rate))
    state = train.create_state(method, tx, config.seed, {"image": sample}, mesh, probe)
    streams = [
        images.train_batches(
            dataset,
            local_batch_size=local_batch_size,
            seed=config.seed,
            process_index=index,
            process_count=NUM_PROCESSES,
            cache=False,
            shuffle_buffer=config.shuffle_buffer,
        )  # fmt: skip
        for index in range(NUM_PROCESSES)
    ]
    # Process p holds rows [p * local, (p + 1) * local) of every global batch.
    global_batches = (
        jax.tree.map(lambda *parts: np.concatenate(parts), *(next(s) for s in streams))
        for _ in iter(int, 1)
    )
    return method, tx, mesh, state, global_batches, probe


@pytest.mark.slow
@needs_fashion_mnist
def test_two_processes_equal_one_process_on_the_same_global_batches_and_resume(tmp_path):
    workdir, hook_dir = tmp_path / "run", tmp_path / "hook"
    first_dumps, resumed_dumps = tmp_path / "dumps", tmp_path / "dumps_resumed"
    for folder in (workdir, first_dumps, resumed_dumps, hook_dir):
        folder.mkdir()
    (hook_dir / "sitecustomize.py").write_text(textwrap.dedent(HOOK))
    env = {
        "PYTHONPATH": os.pathsep.join([str(hook_dir), REPO]),
        # The resumed run reuses the first run's compiled programs (time only).
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }

    start = time.perf_counter()
    first_run = launch(
        workdir, *train_flags(total_steps=3),
        env_extra={**env, "SSL_JAX_TEST_DUMPS": str(first_dumps)},
    )  # fmt: skip
    first_run_seconds = time.perf_counter() - start
    for process, (returncode, log) in enumerate(first_run):
        assert returncode == 0, f"process {process}:\n{log[-3000:]}"
        assert f"process {process} of 2 (flags): 4 local devices" in log
        assert "8 global devices" in log
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "3"]
    # Only process 0 writes metrics.
    assert len(glob.glob(str(workdir / "events.out.tfevents.*"))) == 1

    two_process = {step: assert_every_replica_identical(first_dumps, step) for step in (2, 3)}
    method, tx, mesh, state, global_batches, probe = reference_run(total_steps=3)
    initial_params = jax.device_get(state.params)
    step_fn = train.make_train_step(method, tx, mesh, probe=probe)
    reference = {}
    for step in (1, 2, 3):
        state, _ = step_fn(state, parallel.to_global(next(global_batches), mesh))
        reference[step] = jax.device_get(state)
    for step in (2, 3):
        reference_by_name = {
            jax.tree_util.keystr(path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(reference[step].params)
        }
        assert sorted(two_process[step]) == sorted(reference_by_name)
        for name, value in two_process[step].items():
            np.testing.assert_allclose(
                value, reference_by_name[name], rtol=1e-5, atol=1e-5, err_msg=f"step {step} {name}"
            )
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), reference[2].params, initial_params)
    assert max(jax.tree.leaves(moved)) > 1e-2  # the steps really changed the parameters

    # What the two processes saved is what they held, and restores on one process.
    saved = checkpoint.Checkpointer(str(workdir)).restore(checkpoint.abstract_like(state), step=2)
    assert int(saved.step) == 2
    assert_trees_close(jax.device_get(saved.params), reference[2].params, "saved params", atol=1e-5)
    # atol as in test_train_step: momentum traces sum ~1e-1 terms in another order across processes.
    assert_trees_close(jax.device_get(saved.opt_state), reference[2].opt_state, "opt", atol=1e-5)

    # As if both processes died before their step-3 save: the rerun resumes from step 2 and
    # makes the same third step, bit for bit, from the saved state and the third global batch.
    shutil.rmtree(workdir / "checkpoints" / "3")
    second_run = launch(
        workdir, *train_flags(total_steps=3),
        env_extra={**env, "SSL_JAX_TEST_DUMPS": str(resumed_dumps)},
    )  # fmt: skip
    for process, (returncode, log) in enumerate(second_run):
        assert returncode == 0, f"process {process}:\n{log[-3000:]}"
        assert "resumed from" in log and "at step 2" in log
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "3"]
    resumed = assert_every_replica_identical(resumed_dumps, step=3)
    assert sorted(resumed) == sorted(two_process[3])
    for name, value in resumed.items():
        np.testing.assert_array_equal(value, two_process[3][name], err_msg=name)
    print(f"2-process first run: {first_run_seconds:.0f} s wall")


def assert_one_line_error(results, message):
    for process, (returncode, log) in enumerate(results):
        assert returncode == 1, f"process {process} rc {returncode}:\n{log[-3000:]}"
        last_line = log.strip().splitlines()[-1]
        assert last_line.startswith("error: ") and message in last_line, log[-3000:]
        assert "Traceback" not in log and "Check failure" not in log


def test_coordinator_that_never_answers_fails_within_the_timeout(tmp_path):
    start = time.perf_counter()
    # Process 1 alone: nothing listens at the coordinator address.
    results = launch(tmp_path, "--initialization_timeout=3", counts=[2], process_ids=[1])
    assert_one_line_error(results, "no coordinator answered at localhost:")
    assert time.perf_counter() - start < 90  # imports, then 3 s of waiting; never a hang


@pytest.mark.parametrize(
    "counts, messages",
    [
        # Both expect three, two start: nobody waits forever for the third.
        ((3, 3), ["not all 3 processes joined localhost:"] * 2),
        # The two processes disagree about the count.
        (
            (2, 3),
            [
                "--num_processes=2 here but process 1 was started with --num_processes=3",
                "--num_processes=3 here but process 0 was started with --num_processes=2",
            ],
        ),
    ],
    ids=["missing_process", "different_counts"],
)
def test_num_processes_inconsistent_with_who_joins_fails_clearly(tmp_path, counts, messages):
    start = time.perf_counter()
    results = launch(tmp_path, "--initialization_timeout=5", counts=counts)
    for result, message in zip(results, messages, strict=True):
        assert_one_line_error([result], message)
    assert time.perf_counter() - start < 120


@needs_fashion_mnist
def test_batch_not_divisible_by_all_processes_devices_fails_before_compiling(tmp_path):
    results = launch(tmp_path, "--config.batch_size=12", "--initialization_timeout=60")
    assert_one_line_error(results, "batch_size=12 must be a positive multiple of the 8 devices")
    assert not (tmp_path / "checkpoints").exists()
