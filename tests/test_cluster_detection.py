"""Which cluster a process is in, from its environment and device files alone
(``parallel.detect_cluster``), and what ``parallel.initialize`` then asks of jax.

The real launches are in ``test_slurm`` (a one-node Slurm) and ``test_tpu_launch`` (a stand-in
``gcloud``); these hold the rules for the cases no local cluster can produce.
"""

import importlib.util
import os

import pytest

from ssl_jax.core import parallel

SRUN_STEP = {
    "SLURM_JOB_ID": "41",
    "SLURM_STEP_NODELIST": "node[1-2]",
    "SLURM_NTASKS": "2",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
}


@pytest.fixture
def no_tpu_files(monkeypatch):
    real = os.path.exists
    monkeypatch.setattr(
        os.path, "exists", lambda p: False if p in ("/dev/accel0", "/dev/vfio/0") else real(p)
    )


@pytest.mark.parametrize(
    "environ, expected",
    [
        (SRUN_STEP, "slurm"),
        # A one-task step, and the batch script's own shell (no step variables), stay single.
        ({**SRUN_STEP, "SLURM_NTASKS": "1"}, None),
        ({"SLURM_JOB_ID": "41", "SLURM_NTASKS": "2"}, None),
        ({k: v for k, v in SRUN_STEP.items() if k != "SLURM_PROCID"}, None),
        ({"TPU_WORKER_HOSTNAMES": "t1k-0,t1k-1"}, "tpu"),  # GKE TPU pods
        ({"TPU_PROCESS_ADDRESSES": "10.0.0.2:8476,10.0.0.3:8476"}, "tpu"),
        ({}, None),
    ],
)
def test_the_environment_names_the_cluster(environ, expected, no_tpu_files):
    assert parallel.detect_cluster(environ) == expected


@pytest.mark.parametrize("has_libtpu, expected", [(True, "tpu"), (False, None)])
def test_a_tpu_vm_needs_its_device_file_and_libtpu(monkeypatch, has_libtpu, expected):
    real_exists, real_find = os.path.exists, importlib.util.find_spec
    monkeypatch.setattr(os.path, "exists", lambda p: p == "/dev/accel0" or real_exists(p))
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            (object() if has_libtpu else None) if name == "libtpu" else real_find(name)
        ),
    )
    assert parallel.detect_cluster({}) == expected


@pytest.mark.parametrize("environ, joins", [(SRUN_STEP, True), ({}, False)])
def test_initialize_lets_jax_read_the_cluster_it_detected(
    monkeypatch, environ, joins, no_tpu_files
):
    calls = []
    monkeypatch.setattr(os, "environ", {**os.environ, **environ})
    for name in SRUN_STEP if not environ else ():
        os.environ.pop(name, None)
    monkeypatch.setattr(
        parallel.jax.distributed, "initialize", lambda *args, **kwargs: calls.append(args)
    )
    parallel.initialize()
    # jax's own SLURM and TPU detection fill in the coordinator, count and index.
    assert calls == ([(None, None, None)] if joins else [])
