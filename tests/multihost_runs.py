"""Two-process runs of ``python -m ssl_jax.main`` started from any directory, stopped on cue.

One uninterrupted local run is the reference that the interrupted runs (SIGKILL, SIGTERM, on a
gs:// workdir when the GCS emulator is installed) and the one-process checks compare against.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

from ssl_jax.core import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_PROCESSES = 2
TOTAL_STEPS = 10
# Every save is kept, so the step-2 state (the one compared with one process, before float
# noise grows under LARS at rate 2) is still on disk at the end.
CHECKPOINT_EVERY = 2
KEEP_CHECKPOINTS = 5
# Odd split limits: the processes hold 33/32 memory and 17/16 test examples.
KNN_MEMORY, KNN_TEST = 65, 33

EMULATOR_PYTHON = os.path.join(REPO, ".test-tools", "gcs-emulator", "bin", "python")
EMULATOR_LAUNCHER = os.path.join(REPO, "tests", "tools", "gcs_emulator.py")
BUCKET = "ssl-jax-test"

# Loaded by each child through PYTHONPATH (a sitecustomize.py); the entry point is unchanged.
# SSL_JAX_TEST_DUMPS: every replica's parameters at each save, the examples this process read
# (digests, per training batch and per evaluation stream) and the features each evaluation
# extracted, written at exit. SSL_JAX_TEST_STALL_AFTER_SAVE=S: after its save of step S is
# complete the process leaves a mark and waits to be killed, so that a SIGKILL lands between the
# first checkpoint and the end of the run on every machine's speed.
HOOK = """
import atexit
import hashlib
import json
import os
import time

import jax
import numpy as np

from ssl_jax.core import checkpoint
from ssl_jax.vision import data as images
from ssl_jax.evaluation import features

_DUMPS = os.environ.get("SSL_JAX_TEST_DUMPS")
_STALL = os.environ.get("SSL_JAX_TEST_STALL_AFTER_SAVE")
_save = checkpoint.Checkpointer.save
_next = images._TrainBatches.__next__
_split_iter = images.SplitStream.__iter__
_extract = features.extract_features
_arrays = {}


def _digests(batch):
    return [hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()[:16] for x in batch]


def save(self, step, state):
    if _DUMPS:
        for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
            for shard in leaf.addressable_shards:
                key = f"params{step}|{jax.tree_util.keystr(path)}@{shard.device.id}"
                _arrays[key] = np.asarray(shard.data)
    result = _save(self, step, state)
    if _STALL and str(step) == _STALL:
        self._manager.wait_until_finished()
        open(os.path.join(os.environ["SSL_JAX_TEST_MARKS"], f"saved{jax.process_index()}"), "w")
        time.sleep(3600)
    return result


_reads = {"train": []}


def train_next(self):
    batch = _next(self)
    _reads["train"].append(_digests(batch["image"]))
    return batch


def split_iter(self):
    # One entry per stream, from its first pass (the monitor re-reads its streams, and feature
    # extraction stops taking batches at the last one, never reaching the generator's end).
    name = f"{self.name}#{id(self)}"
    first = name not in _reads
    seen = _reads.setdefault(name, [])
    for images_, labels in _split_iter(self):
        if first:
            seen.extend(_digests(images_))
        yield images_, labels


_calls = []


def extract(*args, **kwargs):
    result = _extract(*args, **kwargs)
    _calls.append(result)
    return result


def _write():
    for index, (x, y) in enumerate(_calls):
        _arrays[f"features{index}"], _arrays[f"labels{index}"] = x, y
    process = jax.process_index()
    np.savez(os.path.join(_DUMPS, f"process{process}.npz"), **_arrays)
    with open(os.path.join(_DUMPS, f"reads{process}.json"), "w") as f:
        json.dump(_reads, f)


checkpoint.Checkpointer.save = save
if _DUMPS:
    images._TrainBatches.__next__ = train_next
    images.SplitStream.__iter__ = split_iter
    features.extract_features = extract
    atexit.register(_write)
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def write_hook(directory):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "sitecustomize.py"), "w") as f:
        f.write(textwrap.dedent(HOOK))
    return str(directory)


def child_env(env_extra=None):
    xla_flags = [
        f for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]  # fmt: skip
    xla_flags.append("--xla_force_host_platform_device_count=4")
    env = dict(os.environ, XLA_FLAGS=" ".join(xla_flags), PYTHONUNBUFFERED="1")
    env.update(env_extra or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), REPO) if p)
    return env


def start(workdir, flags, *, cwd, logs, env_extra=None, program=None):
    """Both processes of one run, started in ``cwd``; their output goes to files in ``logs``.

    ``program`` (``python`` arguments before the coordinator flags) defaults to the trainer.
    """
    port = free_port()
    env = child_env(env_extra)
    os.makedirs(logs, exist_ok=True)
    children = []
    for process_id in range(NUM_PROCESSES):
        command = [
            sys.executable, *(program or ["-m", "ssl_jax.main"]), f"--workdir={workdir}",
            f"--coordinator_address=localhost:{port}", f"--num_processes={NUM_PROCESSES}",
            f"--process_id={process_id}", *flags,
        ]  # fmt: skip
        path = os.path.join(logs, f"process{process_id}.out")
        with open(path, "w") as log:
            child = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=log)
        children.append((child, path))
    return children


def read(path):
    with open(path) as f:
        return f.read()


def wait(children, timeout=900):
    """(returncode, output) of each process; none is left running."""
    results = []
    for child, path in children:
        try:
            child.wait(timeout=timeout)
        finally:
            child.kill()  # a no-op once it has exited
        results.append((child.returncode, read(path)))
    return results


def wait_for(predicate, children, timeout=900, what=""):
    deadline = time.monotonic() + timeout
    while not predicate():
        for child, path in children:
            assert child.poll() is None, f"exited before {what}:\n{read(path)[-3000:]}"
        if time.monotonic() > deadline:
            for child, _ in children:
                child.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill(children, signum=signal.SIGKILL):
    """Signals every process and returns their exit codes."""
    for child, _ in children:
        child.send_signal(signum)
    return [child.wait(timeout=60) for child, _ in children]


def final_arrays(workdir, step=TOTAL_STEPS):
    return checkpoint.Checkpointer(str(workdir), create=False).restore_arrays(step)


def objects(url, prefix):
    """{name: size} of the bucket's objects under ``prefix``, as the GCS JSON API lists them."""
    found, token = {}, ""
    while True:
        query = f"{url}/storage/v1/b/{BUCKET}/o?prefix={prefix}" + (
            f"&pageToken={token}" if token else ""
        )
        with urllib.request.urlopen(query) as answer:
            page = json.load(answer)
        found.update({item["name"]: int(item["size"]) for item in page.get("items", [])})
        token = page.get("nextPageToken")
        if not token:
            return found


def buckets(url):
    with urllib.request.urlopen(f"{url}/storage/v1/b") as answer:
        return sorted(item["name"] for item in json.load(answer).get("items", []))


@contextmanager
def gcs_emulator(patch):
    """The emulator's URL, with STORAGE_EMULATOR_HOST set (through ``patch``) for every child."""
    from ssl_jax.core import storage

    port = free_port()
    url = f"http://localhost:{port}"
    server = subprocess.Popen(
        [EMULATOR_PYTHON, EMULATOR_LAUNCHER, "start", f"--port={port}", "--in-memory",
         f"--default-bucket={BUCKET}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                buckets(url)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and server.poll() is None, "emulator down"
                time.sleep(0.1)
        patch.setenv("STORAGE_EMULATOR_HOST", url)
        for name in (
            "TENSORSTORE_GCS_HTTP_URL",
            "GOOGLE_AUTH_TOKEN_FOR_TESTING",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT",
        ):
            patch.delenv(name, raising=False)
        storage.point_clients_at_emulator()
        yield url
    finally:
        server.kill()
        server.wait()
