#!/usr/bin/env bash
# One pretraining job on a SLURM cluster: srun starts the tasks and ssl_jax joins them through
# jax.distributed's own SLURM detection (coordinator, count and rank from SLURM_* variables).
# Usage: WORKDIR=/shared/run bash launch/slurm.sh [--dry-run] CONFIG [--config.x=y ...]
#   Submits this file with sbatch (the #SBATCH lines below; sbatch options in SBATCH_ARGS win,
#   e.g. SBATCH_ARGS="--nodes=4"). Default: one task per node over all of its GPUs (this script
#   hands jax every GPU of the node through JAX_LOCAL_DEVICE_IDS; jax alone would take only
#   GPU SLURM_LOCALID). One task per GPU instead: SBATCH_ARGS="--ntasks-per-node=8"; keep
#   --gpus-per-node (not --gpus-per-task, which rebinds CUDA_VISIBLE_DEVICES per task and leaves
#   each task only GPU 0), and jax gives task i GPU i. WORKDIR must be on a filesystem all nodes
#   share; VENV is a venv on it made by `bash launch/setup.sh --runtime --cuda12` (no root needed).
#   Preemption: Slurm sends every task SIGTERM 120 s before the time limit or a preemption;
#   ssl_jax saves and exits, and --requeue puts a preempted job back in the queue, where it
#   resumes from WORKDIR (a job past its time limit is resubmitted by hand; it resumes the same).
#SBATCH --job-name=ssl_jax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%j.out
set -euo pipefail

DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then
  DRY_RUN=1
  shift
fi
if [ "$#" -lt 1 ]; then
  echo "usage: WORKDIR=/shared/run $0 [--dry-run] CONFIG [--config.x=y ...]" >&2
  exit 2
fi
if [ -z "${WORKDIR:-}" ]; then
  echo "error: set WORKDIR to a directory on a filesystem every node shares." >&2
  exit 2
fi

run() {
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

if [ -z "${SLURM_JOB_ID:-}" ]; then
  # Outside a job: submit this script; sbatch keeps the environment (WORKDIR, VENV).
  read -r -a EXTRA <<< "${SBATCH_ARGS:-}"
  run sbatch "${EXTRA[@]}" "$0" "$@"
  exit 0
fi

# Inside the job (sbatch copies the script, so the checkout is the submit directory).
cd "${SLURM_SUBMIT_DIR:-.}"
VENV="${VENV:-.venv}"
# find_spec, not import: a second of jax import per job start is a second of nothing.
if [ "$DRY_RUN" -eq 0 ] && ! "$VENV/bin/python" -c \
    "import importlib.util as u, sys; sys.exit(u.find_spec('jax') is None)" 2> /dev/null; then
  echo "error: $VENV/bin/python has no jax: run 'bash launch/setup.sh --runtime --cuda12'" \
    "on the shared filesystem, or set VENV." >&2
  exit 2
fi
export TF_FORCE_GPU_ALLOW_GROWTH=true
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
# One task per node: every GPU of the node is this task's (jax's SLURM detection would keep
# only GPU SLURM_LOCALID). SLURM_GPUS_ON_NODE is how many the job got on this node.
tasks_per_node="${SLURM_TASKS_PER_NODE:-1}"
tasks_per_node="${SLURM_NTASKS_PER_NODE:-${tasks_per_node%%(*}}"
if [ "${tasks_per_node:-1}" = 1 ] && [ -n "${SLURM_GPUS_ON_NODE:-}" ] \
    && [ -z "${JAX_LOCAL_DEVICE_IDS:-}" ]; then
  JAX_LOCAL_DEVICE_IDS="$(seq -s, 0 $((SLURM_GPUS_ON_NODE - 1)))"
  export JAX_LOCAL_DEVICE_IDS
  [ "$DRY_RUN" -eq 1 ] && printf 'export %q\n' "JAX_LOCAL_DEVICE_IDS=$JAX_LOCAL_DEVICE_IDS"
fi
CONFIG="$1"
shift
# --label: each output line starts with its task's rank.
run srun --label --kill-on-bad-exit=1 "$VENV/bin/python" -m ssl_jax.main "--config=$CONFIG" \
  "--workdir=$WORKDIR" "$@"
