"""The launch scripts pass shellcheck, and their ``--dry-run`` commands are the right ones.

Overrides with spaces, brackets and quotes must reach ``ssl_jax.main`` as the user typed them,
through the local shell and, for TPU pods, the remote one.
"""

import os
import shlex
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["launch/tpu_pod.sh", "launch/gpu_workstation.sh", "launch/slurm.sh", "launch/local.sh"]
OVERRIDES = ["--config.augment.crop_scale=(0.2, 1.0)", "--config.model.name=it's $HOME", "--x=*"]


def dry_run(script, *args, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run(
        ["bash", script, "--dry-run", *args],
        cwd=REPO, env={**environment, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines()]


def test_launch_scripts_pass_shellcheck():
    assert shutil.which("shellcheck"), "install shellcheck (launch/setup.sh does)"
    result = subprocess.run(["shellcheck", *SCRIPTS], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_tpu_pod_copies_installs_and_runs_on_every_worker():
    config = "configs/simclr_imagenet.py:runlocal"
    commands = dry_run(
        "launch/tpu_pod.sh", "pod-1", "us-central2-b", config, *OVERRIDES, WORKDIR="gs://b/r 1"
    )
    assert [command[4] for command in commands] == ["ssh", "scp", "ssh", "ssh"]
    for command in commands:
        assert command[:4] == ["gcloud", "compute", "tpus", "tpu-vm"]
        assert "--worker=all" in command and "--zone=us-central2-b" in command
    assert {"./ssl_jax", "./configs", "./requirements.txt", "pod-1:ssl_jax"} <= set(commands[1])
    remote = [
        next(a.removeprefix("--command=") for a in c if a.startswith("--com"))
        for c in commands if c[4] == "ssh"
    ]  # fmt: skip
    assert remote[0] == "mkdir -p ssl_jax"
    words = shlex.split(remote[1])
    assert "requirements.txt" in words and any(w.startswith("jax[tpu]==") for w in words)
    # What the remote shell runs: every word, overrides included, arrives unchanged.
    train = shlex.split(remote[2])
    start = train.index("ssl_jax.main") + 1
    assert train[start : start + 2 + len(OVERRIDES)] == [
        f"--config={config}", "--workdir=gs://b/r 1", *OVERRIDES,
    ]  # fmt: skip


def test_tpu_pod_without_a_shared_workdir_is_refused():
    result = subprocess.run(
        ["bash", "launch/tpu_pod.sh", "--dry-run", "pod", "zone", "configs/x.py"],
        cwd=REPO, env={k: v for k, v in os.environ.items() if k != "WORKDIR"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and "set WORKDIR" in result.stderr


def test_gpu_workstation_runs_one_process_with_gpu_memory_settings():
    lines = dry_run("launch/gpu_workstation.sh", "configs/simclr_cifar10.py", *OVERRIDES)
    exports = dict(line[1].split("=", 1) for line in lines if line[0] == "export")
    assert exports["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert 0.5 < float(exports["XLA_PYTHON_CLIENT_MEM_FRACTION"]) <= 0.95
    commands = [line for line in lines if line[0] != "export"]
    assert commands[0] == ["bash", "launch/setup.sh"]
    assert commands[1][-1].startswith("jax[cuda12]==")
    assert commands[2] == [
        ".venv/bin/python", "-m", "ssl_jax.main", "--config=configs/simclr_cifar10.py",
        "--workdir=workdirs/simclr_cifar10", *OVERRIDES,
    ]  # fmt: skip


def test_slurm_submits_itself_then_sruns_one_process_per_task():
    submit = dry_run(
        "launch/slurm.sh", "configs/c.py", *OVERRIDES, WORKDIR="/shared/r", SBATCH_ARGS="--nodes=4"
    )
    assert submit == [["sbatch", "--nodes=4", "launch/slurm.sh", "configs/c.py", *OVERRIDES]]
    inside_job = dry_run(
        "launch/slurm.sh", "configs/c.py", *OVERRIDES, WORKDIR="/shared/r", SLURM_JOB_ID="7",
        SLURM_SUBMIT_DIR=REPO,
    )  # fmt: skip
    assert inside_job == [
        ["srun", "--label", "--kill-on-bad-exit=1", ".venv/bin/python", "-m", "ssl_jax.main",
         "--config=configs/c.py", "--workdir=/shared/r", *OVERRIDES],
    ]  # fmt: skip
    with open(os.path.join(REPO, "launch/slurm.sh")) as f:
        directives = {line.split()[1] for line in f if line.startswith("#SBATCH")}
    assert {"--signal=TERM@120", "--requeue"} <= directives


@pytest.mark.parametrize(
    "tasks_per_node, expected",
    [("1", [["export", "JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7"]]), ("8", [])],
    ids=["per_node_gets_every_gpu", "per_gpu_leaves_jax_to_pick_slurm_localid"],
)
def test_slurm_hands_a_per_node_task_every_gpu_of_its_node(tasks_per_node, expected):
    lines = dry_run(
        "launch/slurm.sh", "configs/c.py", WORKDIR="/shared/r", SLURM_JOB_ID="7",
        SLURM_SUBMIT_DIR=REPO, SLURM_NTASKS_PER_NODE=tasks_per_node, SLURM_GPUS_ON_NODE="8",
    )  # fmt: skip
    assert lines[:-1] == expected and lines[-1][0] == "srun"


@pytest.mark.parametrize("script", ["launch/tpu_pod.sh", "launch/slurm.sh"])
def test_multi_node_scripts_print_usage_without_arguments(script):
    result = subprocess.run(["bash", script], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("usage:")
