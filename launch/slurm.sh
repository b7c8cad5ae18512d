#!/usr/bin/env bash
# One pretraining job on a SLURM cluster: one process per node over all its GPUs; srun starts
# them and ssl_jax joins them through jax.distributed (coordinator, count and rank from SLURM).
# Usage: WORKDIR=/shared/run bash launch/slurm.sh [--dry-run] CONFIG [--config.x=y ...]
#   Submits this file with sbatch (the #SBATCH lines below; sbatch options on the command line,
#   e.g. SBATCH_ARGS="--nodes=4", win). One process per GPU instead: SBATCH_ARGS="--ntasks-per-node=8
#   --gpus-per-task=1"; jax then gives each process the GPU SLURM_LOCALID names. WORKDIR must be
#   on a filesystem all nodes share; VENV is the environment made by launch/setup.sh on it.
#SBATCH --job-name=ssl_jax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
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
export TF_FORCE_GPU_ALLOW_GROWTH=true
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
CONFIG="$1"
shift
run srun --kill-on-bad-exit=1 "$VENV/bin/python" -m ssl_jax.main "--config=$CONFIG" \
  "--workdir=$WORKDIR" "$@"
