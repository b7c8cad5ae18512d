"""Two-process runs of ``python -m ssl_jax.main`` started from any directory, stopped on cue.

Shared by the cloud-storage and the preemption tests: one uninterrupted local run is the
reference both compare against, trained once per session.
"""

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

from test_multihost import NUM_PROCESSES, REPO, free_port, train_flags

from ssl_jax.core import checkpoint

TOTAL_STEPS = 10
CHECKPOINT_EVERY = 4
FLAGS = [
    *train_flags(TOTAL_STEPS),
    f"--config.checkpoint_every_steps={CHECKPOINT_EVERY}",
    "--config.log_every_steps=1",
    "--config.eval_every_steps=1000",
]

# Loaded by each child through PYTHONPATH. With SSL_JAX_TEST_STALL_AFTER_SAVE=S the process
# finishes its save of step S, leaves a mark and waits to be killed: a SIGKILL that lands
# after the first checkpoint and before the run could end, on every machine's speed.
HOOK = """
import os
import time
import jax
from ssl_jax.core import checkpoint

_save = checkpoint.Checkpointer.save


def save(self, step, state):
    result = _save(self, step, state)
    if str(step) == os.environ.get("SSL_JAX_TEST_STALL_AFTER_SAVE"):
        self._manager.wait_until_finished()
        mark = os.path.join(os.environ["SSL_JAX_TEST_MARKS"], f"saved{jax.process_index()}")
        open(mark, "w").close()
        time.sleep(3600)
    return result


checkpoint.Checkpointer.save = save
"""


def write_hook(directory):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "sitecustomize.py"), "w") as f:
        f.write(textwrap.dedent(HOOK))
    return directory


# Every run of the session reuses the first one's compiled programs (time only).
_CACHE_DIR = tempfile.mkdtemp(prefix="ssl_jax_test_jit_")
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
COMPILE_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": _CACHE_DIR,
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
}


def start(workdir, *, cwd, logs, env_extra=None, flags=FLAGS):
    """Both processes of one run, started in ``cwd``; their output goes to files in ``logs``."""
    port = free_port()
    xla_flags = [
        f for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]  # fmt: skip
    xla_flags.append("--xla_force_host_platform_device_count=4")
    env = dict(os.environ, XLA_FLAGS=" ".join(xla_flags), PYTHONUNBUFFERED="1", **COMPILE_CACHE)
    env.update(env_extra or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), REPO) if p)
    os.makedirs(logs, exist_ok=True)
    children = []
    for process_id in range(NUM_PROCESSES):
        command = [
            sys.executable, "-m", "ssl_jax.main", f"--workdir={workdir}",
            "--config=" + os.path.join(REPO, "configs/simclr_fashion_mnist.py") + ":runlocal",
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


def wait(children, timeout=400):
    """(returncode, output) of each process; none is left running."""
    results = []
    for child, path in children:
        try:
            child.wait(timeout=timeout)
        finally:
            child.kill()  # a no-op once it has exited
        results.append((child.returncode, read(path)))
    return results


def wait_for(predicate, children, timeout=300, what=""):
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
    for child, _ in children:
        child.send_signal(signum)
    for child, _ in children:
        child.wait(timeout=60)


def final_arrays(workdir, step=TOTAL_STEPS):
    return checkpoint.Checkpointer(str(workdir), create=False).restore_arrays(step)


_REFERENCE = {}


def uninterrupted(tmp_path_factory):
    """The final state of the 2-process run on a local workdir, uninterrupted (once a session)."""
    if "arrays" not in _REFERENCE:
        root = tmp_path_factory.mktemp("uninterrupted_2proc")
        started = time.perf_counter()
        results = wait(start(root / "run", cwd=root, logs=root / "logs"))
        for process, (returncode, output) in enumerate(results):
            assert returncode == 0, f"process {process}:\n{output[-3000:]}"
        _REFERENCE["seconds"] = time.perf_counter() - started
        _REFERENCE["arrays"] = final_arrays(root / "run")
    return _REFERENCE["arrays"]
