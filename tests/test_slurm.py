"""launch/slurm.sh on a real one-node Slurm: 2 tasks join through jax's SLURM detection.

The test starts its own munged, slurmctld and slurmd (Debian's slurm-wlm, launch/setup.sh
installs it) from a config it writes, submits launch/slurm.sh with sbatch, and checks that both
tasks ended with the parameters of one process fed the same global batches (computed here while
the job runs). It stops exactly the daemons it started, by their pid files. The run is the
smallest that still trains across both tasks: 2 steps, no probe, no kNN monitor.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from multihost_runs import free_port
from test_data import needs_fashion_mnist
from test_multihost import (
    HOOK,
    NUM_PROCESSES,
    OVERRIDES,
    assert_every_replica_identical,
    tiny_config,
)

from ssl_jax import train
from ssl_jax.core import optim, parallel
from ssl_jax.methods import simclr
from ssl_jax.vision import data as images

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "sinfo", "squeue")
TOTAL_STEPS = 2  # the save at step 2 dumps the parameters
# test_multihost's tiny run, cut to what this test proves (the join and the trained parameters):
# no online probe, and (in NO_EVAL) no kNN monitor, whose programs and test-split reads would
# double each task's start-up on two cores.
SLURM_OVERRIDES = {
    "probe.enabled": False,
    "knn.max_memory_examples": 16,
    "knn.max_test_examples": 16,
}
NO_EVAL = """
from ssl_jax.evaluation import monitor as _monitor

_monitor.KnnMonitor.baselines = lambda self: {}
_monitor.KnnMonitor.__call__ = lambda self, method, state: {}
"""


def write_config(root):
    host = socket.gethostname().split(".")[0]
    (root / "munge.key").write_bytes(os.urandom(1024))
    os.chmod(root / "munge.key", 0o400)
    conf = textwrap.dedent(
        f"""\
        ClusterName=ssljaxtest
        SlurmctldHost={host}
        SlurmctldPort={free_port()}
        SlurmdPort={free_port()}
        SlurmUser=root
        SlurmdUser=root
        AuthType=auth/munge
        AuthInfo=socket={root}/munge.socket
        StateSaveLocation={root}/state
        SlurmdSpoolDir={root}/spool
        SlurmctldPidFile={root}/slurmctld.pid
        SlurmdPidFile={root}/slurmd.pid
        SlurmctldLogFile={root}/slurmctld.log
        SlurmdLogFile={root}/slurmd.log
        ProctrackType=proctrack/linuxproc
        TaskPlugin=task/none
        SelectType=select/cons_tres
        SelectTypeParameters=CR_CPU
        ReturnToService=2
        MpiDefault=none
        NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN
        PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
        """
    )
    (root / "slurm.conf").write_text(conf)
    for folder in ("state", "spool"):
        (root / folder).mkdir()
    return root / "slurm.conf"


def wait_for(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def slurm(tmp_path):
    """A running one-node cluster: yields the environment that reaches it."""
    missing = [name for name in DAEMONS if not shutil.which(name)]
    assert not missing, f"install slurm-wlm and munge (launch/setup.sh does): {missing}"
    if os.geteuid() != 0:
        pytest.skip("a one-node Slurm with SlurmUser=root needs root")
    root = tmp_path / "slurm"
    root.mkdir()
    conf = write_config(root)
    env = dict(os.environ, SLURM_CONF=str(conf))
    pid_files = [root / "munged.pid", root / "slurmctld.pid", root / "slurmd.pid"]
    try:
        subprocess.run(
            ["munged", "--force", f"--socket={root}/munge.socket", f"--key-file={root}/munge.key",
             f"--pid-file={pid_files[0]}", f"--log-file={root}/munged.log",
             f"--seed-file={root}/munged.seed"],
            check=True, timeout=30,
        )  # fmt: skip
        subprocess.run(["slurmctld", "-f", str(conf)], env=env, check=True, timeout=30)
        subprocess.run(["slurmd", "-f", str(conf)], env=env, check=True, timeout=30)

        def idle():
            states = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True
            ).stdout.split()
            return states and all(state.startswith("idle") for state in states)

        wait_for(idle, 60, "the node to be idle in sinfo")
        yield env
    finally:
        for pid_file in reversed(pid_files):
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
                except ProcessLookupError:
                    pass


def one_process_reference(config):
    """The parameters of one 8-device process fed the global batches the two tasks assemble."""
    dataset = images.describe(config.dataset)
    mesh = parallel.make_mesh()
    _, tx = optim.from_config(config, config.total_steps, 0)
    method = simclr.make(config, dataset.image_size, parallel.DATA_AXIS)
    local = config.batch_size // NUM_PROCESSES
    sample = {"image": np.zeros((local, 28, 28, 1), np.uint8)}
    state = train.create_state(method, tx, config.seed, sample, mesh)
    streams = [
        images.train_batches(
            dataset,
            local_batch_size=local,
            seed=config.seed,
            process_index=index,
            process_count=NUM_PROCESSES,
            cache=False,
            shuffle_buffer=config.shuffle_buffer,
        )  # fmt: skip
        for index in range(NUM_PROCESSES)
    ]
    step_fn = train.make_train_step(method, tx, mesh)
    for _ in range(config.total_steps):
        # Task p holds rows [p * local, (p + 1) * local) of every global batch.
        batch = jax.tree.map(lambda *parts: np.concatenate(parts), *(next(s) for s in streams))
        state, _ = step_fn(state, parallel.to_global(batch, mesh))
    return {
        jax.tree_util.keystr(path): leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))
    }


@pytest.mark.slow
@needs_fashion_mnist
def test_slurm_script_runs_two_tasks_that_equal_one_process(slurm, tmp_path):
    workdir, dumps, hook_dir = tmp_path / "run", tmp_path / "dumps", tmp_path / "hook"
    for folder in (workdir, dumps, hook_dir):
        folder.mkdir()
    # Only in the trainer: the job's other Pythons (slurm.sh's venv check) skip the hook's imports.
    hook = textwrap.indent(textwrap.dedent(HOOK) + NO_EVAL, "    ")
    (hook_dir / "sitecustomize.py").write_text(
        f"import sys\n\nif 'ssl_jax.main' in sys.orig_argv:\n{hook}"
    )
    xla_flags = [
        f for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ] + ["--xla_force_host_platform_device_count=4"]  # fmt: skip
    env = dict(
        slurm,
        WORKDIR=str(workdir),
        VENV=sys.prefix,  # this venv, whose bin/python the script runs
        XLA_FLAGS=" ".join(xla_flags),
        PYTHONPATH=os.pathsep.join([str(hook_dir), REPO]),
        SSL_JAX_TEST_DUMPS=str(dumps),
        # This one-node cluster has no GPUs and a few CPUs: the script's defaults ask for more.
        SBATCH_ARGS=f"--nodes=1 --ntasks=2 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0 "
        f"--output={tmp_path}/slurm-%j.out --wait",
    )
    config = tiny_config(TOTAL_STEPS)
    for name, value in SLURM_OVERRIDES.items():
        parent, _, leaf = name.rpartition(".")
        setattr(config[parent], leaf, value)
    assert config.checkpoint_every_steps == TOTAL_STEPS
    flags = [
        f"--config.{name}={value}"
        for name, value in {**OVERRIDES, **SLURM_OVERRIDES, "total_steps": TOTAL_STEPS}.items()
    ]
    start = time.perf_counter()
    submit = subprocess.Popen(
        ["bash", "launch/slurm.sh", "configs/simclr_fashion_mnist.py:runlocal", *flags,
         "--initialization_timeout=120"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # Computed while the job runs: this process waits on sbatch --wait otherwise.
        reference = one_process_reference(config)
        stdout, stderr = submit.communicate(timeout=400)
    finally:
        submit.kill()  # a no-op once sbatch has exited
    seconds = time.perf_counter() - start
    logs = "".join(path.read_text() for path in tmp_path.glob("slurm-*.out"))
    assert submit.returncode == 0, f"{stdout}\n{stderr}\n{logs[-4000:]}"
    # srun --label prefixes each line with its task's rank; both joined through SLURM detection.
    for task in (0, 1):
        assert f"{task}: " in logs and f"process {task} of 2 (slurm)" in logs, logs[-4000:]
    assert "8 global devices" in logs

    two_tasks = assert_every_replica_identical(dumps, TOTAL_STEPS)
    assert sorted(two_tasks) == sorted(reference)
    for name, value in two_tasks.items():
        np.testing.assert_allclose(value, reference[name], rtol=1e-5, atol=1e-5, err_msg=name)
    print(f"Slurm job (sbatch --wait, 2 tasks, {TOTAL_STEPS} steps) and reference: {seconds:.0f} s")
