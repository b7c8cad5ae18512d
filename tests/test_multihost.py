"""Two processes × four CPU devices through ``python -m ssl_jax.main`` against one 8-device process.

One set of 2-process runs (``runs``) holds: training equal to one process on the same global
batches, disjoint reads, features, kNN and linear evaluation equal to one process with uneven
per-process counts, SIGKILL and SIGTERM to one process resuming bitwise, a gs:// workdir.
Also the start-up failures: a coordinator that never answers, processes that never join or
disagree on ``--num_processes``, and a batch that does not divide over all processes' devices.
"""

import contextlib
import glob
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import multihost_runs as runs_lib
import numpy as np
import optax
import pytest
from entry_points import run_commands
from resume import assert_bitwise_equal
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
    port = runs_lib.free_port()
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


SCENARIO_OVERRIDES = {
    **OVERRIDES,
    "checkpoint_every_steps": runs_lib.CHECKPOINT_EVERY,
    "keep_checkpoints": runs_lib.KEEP_CHECKPOINTS,
    "knn.max_memory_examples": runs_lib.KNN_MEMORY,
    "knn.max_test_examples": runs_lib.KNN_TEST,
    "total_steps": runs_lib.TOTAL_STEPS,
    "log_every_steps": 1,
    "eval_every_steps": 1000,  # kNN at the start and at the end only
}
SCENARIO_FLAGS = [
    "--config=" + os.path.join(REPO, "configs", "simclr_fashion_mnist.py") + ":runlocal",
    *(f"--config.{name}={value}" for name, value in SCENARIO_OVERRIDES.items()),
    "--initialization_timeout=120",
]
LINEAR_EVAL_FLAGS = [
    "--config=configs/linear_eval.py:runlocal",
    "--config.compare_random_init=False",
    "--config.compare_pixels=False",
    "--config.epochs=1",
]
# ``ssl_jax.linear_eval`` joins a cluster only through SLURM or TPU detection: the same
# ``linear.run`` behind explicit coordinator flags, as ``ssl_jax.main`` takes them.
LINEAR_EVAL_PROGRAM = """
import sys
from absl import flags
from ml_collections import config_flags
from ssl_jax.core import parallel
from ssl_jax.evaluation import linear
config_flags.DEFINE_config_file("config", None, "")
for name in ("workdir", "coordinator_address"):
    flags.DEFINE_string(name, None, "")
for name in ("num_processes", "process_id"):
    flags.DEFINE_integer(name, None, "")
FLAGS = flags.FLAGS
FLAGS(sys.argv)
parallel.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
print("done:", linear.run(FLAGS.config, FLAGS.workdir), flush=True)

# Feature extraction with uneven per-process counts (the pipelines give every process an equal
# slice; a folder with undecodable files does not): process 0 holds 15 test images, process 1 9.
import os
import jax
import numpy as np
from ssl_jax.vision import data as images
from ssl_jax.evaluation import features, pretrained
encoder = pretrained.load(FLAGS.workdir)
x, y = images.load_split(encoder.dataset, "test", max_examples=24)
mine = slice(0, 15) if jax.process_index() == 0 else slice(15, None)
got = features.extract_features(
    encoder.method.encode, encoder.variables, x[mine], y[mine], parallel.make_mesh(), batch_size=16
)
path = os.path.join(os.environ["SSL_JAX_TEST_DUMPS"], f"uneven{jax.process_index()}.npz")
np.savez(path, features=got[0], labels=got[1])
"""
UNEVEN_TOTAL, UNEVEN_BATCH = 24, 16


def assert_ran(results, what):
    for process, (returncode, log) in enumerate(results):
        assert returncode == 0, f"{what}, process {process} rc {returncode}:\n{log[-3000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The session's 2-process runs, each launched once; the tests below read what they left.

    1. ``reference``: uninterrupted, local, every replica and read recorded (the hook).
    2. ``interrupted`` (gs:// when the emulator is installed): SIGKILL after the step-4 save is
       complete; the rerun resumes and gets SIGTERM to process 1 after step 5, which stops both
       at one step; the third run resumes there and ends.
    3. Linear evaluation of the reference workdir by two processes, and of the interrupted
       workdir (bitwise the same state) by one, with the report.
    """
    if images.missing_data_message("fashion_mnist") is not None:
        pytest.skip("Fashion-MNIST is not prepared (.ci/run prepares it)")
    root = tmp_path_factory.mktemp("multihost")
    out = {"root": root, "seconds": {}}
    hook = runs_lib.write_hook(root / "hook")
    compile_cache = {
        # Every launch reuses the first one's compiled programs (time only).
        "JAX_COMPILATION_CACHE_DIR": str(root / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    cache = {**compile_cache, "PYTHONPATH": hook}  # the trainer's runs, with the hook
    with contextlib.ExitStack() as stack:
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        url = None
        if os.path.exists(runs_lib.EMULATOR_PYTHON):
            url = stack.enter_context(runs_lib.gcs_emulator(patch))
        out["url"] = url

        timer = time.perf_counter()
        reference, dumps = root / "reference", root / "dumps"
        dumps.mkdir()
        children = runs_lib.start(
            reference, SCENARIO_FLAGS, cwd=root, logs=root / "logs_reference",
            env_extra={**cache, "SSL_JAX_TEST_DUMPS": str(dumps)},
        )  # fmt: skip
        out["reference"] = runs_lib.wait(children)
        assert_ran(out["reference"], "uninterrupted run")
        out["seconds"]["reference"] = time.perf_counter() - timer
        out["reference_dir"], out["dumps"] = reference, dumps

        timer = time.perf_counter()
        workdir = f"gs://{runs_lib.BUCKET}/killed" if url else str(root / "interrupted")
        cwd, marks = root / "cwd", root / "marks"
        cwd.mkdir()
        marks.mkdir()
        first = runs_lib.start(
            workdir, SCENARIO_FLAGS, cwd=cwd, logs=root / "logs_killed",
            env_extra={**cache, "SSL_JAX_TEST_STALL_AFTER_SAVE": str(runs_lib.CHECKPOINT_EVERY),
                       "SSL_JAX_TEST_MARKS": str(marks)},
        )  # fmt: skip
        runs_lib.wait_for(lambda: len(os.listdir(marks)) == 2, first, what="the first save")
        if url:
            out["step_objects"] = runs_lib.objects(
                url, f"killed/checkpoints/{runs_lib.CHECKPOINT_EVERY}/"
            )
        out["killed_codes"] = runs_lib.kill(first)

        second = runs_lib.start(workdir, SCENARIO_FLAGS, cwd=cwd, logs=root / "logs_sigterm",
                                env_extra=cache)  # fmt: skip
        # Process 0 prints the step lines; the signal lands a step into the resumed run.
        runs_lib.wait_for(lambda: "step 5/" in runs_lib.read(second[0][1]), second, what="step 5")
        second[1][0].send_signal(signal.SIGTERM)
        signalled = time.perf_counter()
        out["sigterm"] = runs_lib.wait(second)
        out["seconds"]["signal_to_exit"] = time.perf_counter() - signalled
        out["saved_after_sigterm"] = checkpoint.Checkpointer(workdir, create=False).all_steps()

        out["rerun"] = runs_lib.wait(
            runs_lib.start(workdir, SCENARIO_FLAGS, cwd=cwd, logs=root / "logs_rerun",
                           env_extra=cache)
        )  # fmt: skip
        out["seconds"]["interrupted"] = time.perf_counter() - timer
        out["workdir"], out["cwd"] = workdir, cwd

        timer = time.perf_counter()
        out["linear_eval_2"] = runs_lib.wait(
            runs_lib.start(
                reference, LINEAR_EVAL_FLAGS, cwd=REPO, logs=root / "logs_linear_eval",
                env_extra={**compile_cache, "SSL_JAX_TEST_DUMPS": str(dumps)},
                program=["-c", LINEAR_EVAL_PROGRAM],
            )
        )  # fmt: skip
        out["seconds"]["linear_eval_2"] = time.perf_counter() - timer
        timer = time.perf_counter()
        # One interpreter forks both commands (shared imports); they run from the repository root.
        out["report"], out["linear_eval_1"] = run_commands(
            [
                ["ssl_jax.report", f"--workdir={workdir}"],
                ["ssl_jax.linear_eval", f"--workdir={workdir}", *LINEAR_EVAL_FLAGS],
            ],
            command_timeout=300,
        )
        out["seconds"]["report_and_linear_eval_1"] = time.perf_counter() - timer
        yield out
        print(
            "2-process runs (s): "
            + ", ".join(f"{name} {value:.0f}" for name, value in out["seconds"].items())
        )


def replicas(dumps, step):
    """{leaf: array} of the step's parameters, after checking all 8 device copies are equal."""
    per_process = [dict(np.load(dumps / f"process{p}.npz")) for p in range(NUM_PROCESSES)]
    prefix = f"params{step}|"
    first = {}
    for process, arrays in enumerate(per_process):
        names = [name for name in arrays if name.startswith(prefix)]
        leaves = {name[len(prefix) :].rpartition("@")[0] for name in names}
        assert names and len(names) == 4 * len(leaves), (process, sorted(names)[:5])
        for name in names:
            leaf = name[len(prefix) :].rpartition("@")[0]
            reference = first.setdefault(leaf, arrays[name])
            np.testing.assert_array_equal(arrays[name], reference, err_msg=f"{process} {name}")
    return first


@pytest.mark.slow
def test_two_processes_train_like_one_process_on_the_same_global_batches(runs):
    for process, (_, log) in enumerate(runs["reference"]):
        assert f"process {process} of 2 (flags): 4 local devices" in log
        assert "8 global devices" in log
    reference = runs["reference_dir"]
    assert sorted(os.listdir(reference / "checkpoints"), key=int) == ["2", "4", "6", "8", "10"]
    # Only process 0 writes metrics.
    assert len(glob.glob(str(reference / "events.out.tfevents.*"))) == 1
    two_process = {step: replicas(runs["dumps"], step) for step in (2, 6, 10)}

    method, tx, mesh, state, global_batches, probe = reference_run(runs_lib.TOTAL_STEPS)
    initial_params = jax.device_get(state.params)
    step_fn = train.make_train_step(method, tx, mesh, probe=probe)
    for _ in range(runs_lib.CHECKPOINT_EVERY):
        state, _ = step_fn(state, parallel.to_global(next(global_batches), mesh))
    one_process = {
        jax.tree_util.keystr(path): leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))
    }
    assert sorted(two_process[runs_lib.CHECKPOINT_EVERY]) == sorted(one_process)
    for name, value in two_process[runs_lib.CHECKPOINT_EVERY].items():
        np.testing.assert_allclose(value, one_process[name], rtol=1e-5, atol=1e-5, err_msg=name)
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), state.params, initial_params)
    assert max(jax.tree.leaves(moved)) > 1e-2  # the steps really changed the parameters

    # What the two processes saved is what they held, and restores on one process.
    every = runs_lib.CHECKPOINT_EVERY
    saved = checkpoint.Checkpointer(str(reference)).restore(checkpoint.abstract_like(state), every)
    assert int(saved.step) == every
    assert_trees_close(
        jax.device_get(saved.params), jax.device_get(state.params), "params", atol=1e-5
    )
    # atol as in test_train_step: momentum traces sum ~1e-1 terms in another order.
    assert_trees_close(
        jax.device_get(saved.opt_state), jax.device_get(state.opt_state), "opt", atol=1e-5
    )


def assert_same_rows(got, got_labels, want, want_labels):
    """``got`` is ``want``, row for row: processes that read consecutive slices of a split give
    their features back in the split's order, as one process does."""
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got_labels, want_labels)


def digests(batch):
    return [hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()[:16] for x in batch]


@pytest.mark.slow
def test_two_processes_never_read_the_same_examples(runs):
    reads = [json.loads((runs["dumps"] / f"reads{p}.json").read_text()) for p in range(2)]
    train_reads = [[d for batch in r.pop("train") for d in batch] for r in reads]
    local_batch = BATCH_SIZE // NUM_PROCESSES
    for process_reads in train_reads:
        assert len(process_reads) >= runs_lib.TOTAL_STEPS * local_batch
    assert not set(train_reads[0]) & set(train_reads[1])
    dataset = images.describe("fashion_mnist")
    limits = {dataset.memory_split: runs_lib.KNN_MEMORY, dataset.test_split: runs_lib.KNN_TEST}
    # The evaluation streams (pixel baseline, kNN features), in the order both processes made them.
    assert list(map(len, reads)) == [4, 4], [list(r) for r in reads]
    assert [a.split("#")[0] for a in reads[0]] == [b.split("#")[0] for b in reads[1]]
    for name0, name1 in zip(*reads, strict=True):
        split = name0.split("#")[0].split("/")[1]
        first, second = reads[0][name0], reads[1][name1]
        # tfds's per-process split drops the odd example: 65 -> 32 + 32, 33 -> 16 + 16.
        assert len(first) == len(second) == limits[split] // 2, name0
        assert not set(first) & set(second), name0
        whole, _ = images.load_split(dataset, split, max_examples=limits[split] // 2 * 2)
        assert first + second == digests(whole), name0  # in order, nothing else


@pytest.mark.slow
def test_features_and_knn_of_two_uneven_processes_equal_one_process(runs, tmp_path):
    from test_end_to_end import logged_scalars

    from ssl_jax.evaluation import features
    from ssl_jax.vision import monitor

    method, _, mesh, state, _, _ = reference_run(runs_lib.TOTAL_STEPS)
    final = checkpoint.Checkpointer(str(runs["reference_dir"])).restore(
        checkpoint.abstract_like(state), step=runs_lib.TOTAL_STEPS
    )
    config = tiny_config(runs_lib.TOTAL_STEPS)
    # What the two processes read of the odd limits (test_two_processes_never_read_...).
    memory, test = runs_lib.KNN_MEMORY // 2 * 2, runs_lib.KNN_TEST // 2 * 2
    config.knn.max_memory_examples, config.knn.max_test_examples = memory, test
    one = monitor.KnnMonitor(config, images.describe(config.dataset), mesh, str(tmp_path))
    variables = {"params": final.params, "batch_stats": final.batch_stats}
    dumped = [np.load(runs["dumps"] / f"process{p}.npz") for p in range(NUM_PROCESSES)]
    # Extractions in the run: memory and test at the start, then at the end (calls 2, 3).
    assert "features3" in dumped[0] and "features4" not in dumped[0]
    expected = ((2, one.memory, memory), (3, one.test, test))
    for call, stream, count in expected:
        want, want_labels = features.extract_features(
            method.encode, variables, stream, None, mesh, batch_size=config.knn.batch_size
        )
        assert want.shape[0] == count
        for process in range(NUM_PROCESSES):  # every process gets every process's rows
            got, got_labels = dumped[process][f"features{call}"], dumped[process][f"labels{call}"]
            assert_same_rows(got, got_labels, want, want_labels)
    logged = logged_scalars(str(runs["reference_dir"]), "knn_top1")
    assert one(method, final)["knn_top1"] == pytest.approx(logged[runs_lib.TOTAL_STEPS], abs=1e-6)

    # Uneven local counts (15 and 9 images), gathered in process order, against one process.
    from ssl_jax.evaluation import knn, pretrained

    assert_ran(runs["linear_eval_2"], "2-process linear eval and uneven extraction")
    encoder = pretrained.load(str(runs["reference_dir"]))
    x, y = images.load_split(encoder.dataset, "test", max_examples=UNEVEN_TOTAL)
    want, want_labels = features.extract_features(
        encoder.method.encode, encoder.variables, x, y, mesh, batch_size=UNEVEN_BATCH
    )
    assert want.shape[0] == UNEVEN_TOTAL

    def knn_top1(x, y):
        return knn.knn_accuracy(x, y, x, y, num_classes=10, k=5)

    for process in range(NUM_PROCESSES):
        got = np.load(runs["dumps"] / f"uneven{process}.npz")
        assert_same_rows(got["features"], got["labels"], want, want_labels)
        assert knn_top1(got["features"], got["labels"]) == knn_top1(want, want_labels)


@pytest.mark.slow
def test_sigkill_then_sigterm_to_one_process_resume_bitwise_to_the_uninterrupted_run(runs):
    every = runs_lib.CHECKPOINT_EVERY
    assert runs["killed_codes"] == [-signal.SIGKILL] * 2  # died by the kill, not on their own
    stops = []
    for process, (returncode, output) in enumerate(runs["sigterm"]):
        assert returncode == 0, f"process {process}:\n{output[-3000:]}"
        assert "resumed from" in output and f"at step {every}" in output
        stops += [int(s) for s in re.findall(r"stopped at step (\d+) on request", output)]
    assert "step 5/" not in runs["sigterm"][1][1]  # step lines come from process 0 alone
    assert len(stops) == 2 and every < stops[0] == stops[1] < runs_lib.TOTAL_STEPS, stops
    assert runs["saved_after_sigterm"][-1] == stops[0], runs["saved_after_sigterm"]
    for process, (returncode, output) in enumerate(runs["rerun"]):
        assert returncode == 0, f"process {process}:\n{output[-3000:]}"
        assert "resumed from" in output and f"at step {stops[0]}" in output
    assert_bitwise_equal(
        runs_lib.final_arrays(runs["workdir"]), runs_lib.final_arrays(runs["reference_dir"])
    )
    print(f"SIGTERM to process 1: both saved step {stops[0]}; "
          f"{runs['seconds']['signal_to_exit']:.1f} s from signal to exit")  # fmt: skip
    assert os.listdir(runs["cwd"]) == []  # nothing landed in the current directory
    url = runs["url"]
    if url is None:
        return
    assert f"killed/checkpoints/{every}/commit_success.txt" in runs["step_objects"]
    names = runs_lib.objects(url, "killed/")
    assert "killed/config.json" in names
    assert {"killed/logs/process_0.log", "killed/logs/process_1.log"} <= set(names)
    assert any(n.startswith("killed/events.out.tfevents.") for n in names), sorted(names)
    saved = {n.split("/")[2] for n in names if n.startswith("killed/checkpoints/")}
    assert {str(stops[0]), str(runs_lib.TOTAL_STEPS)} <= saved, saved
    print(f"checkpoint of step {every} on gs://: {len(runs['step_objects'])} objects, "
          f"{sum(runs['step_objects'].values())} bytes")  # fmt: skip


@pytest.mark.slow
def test_linear_eval_of_two_processes_equals_one_and_the_report_reads_the_workdir(runs):
    from ssl_jax.core import storage

    assert_ran(runs["linear_eval_2"], "2-process linear eval")
    report, linear_eval = runs["report"], runs["linear_eval_1"]
    assert report.returncode == 0, report.stderr[-3000:]
    assert linear_eval.returncode == 0, linear_eval.stderr[-3000:]
    assert "training_curves.png" in report.stdout
    workdir = runs["workdir"]
    assert storage.path(workdir, "plots", "training_curves.png").exists()
    one = json.loads(storage.path(workdir, "linear_eval", "results.json").read_text())
    two = json.loads((runs["reference_dir"] / "linear_eval" / "results.json").read_text())
    assert one["step"] == two["step"] == runs_lib.TOTAL_STEPS and 0 <= one["linear_top1"] <= 1
    # Both evaluated the same state (the interrupted run ends bitwise where the reference does).
    two_files = sorted(glob.glob(str(runs["reference_dir"] / "linear_eval" / "features_step10*")))
    assert len(two_files) == 2, two_files  # train and test features
    for path in two_files:
        with storage.path(workdir, "linear_eval", os.path.basename(path)).open("rb") as f:
            want = np.load(f)
            got = np.load(path)
            assert_same_rows(got["features"], got["labels"], want["features"], want["labels"])
    assert one["linear_top1"] == pytest.approx(two["linear_top1"], abs=1.5 / 128), (one, two)
    assert not os.path.exists(os.path.join(REPO, "gs:"))
    assert os.listdir(runs["cwd"]) == []


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
