#!/usr/bin/env bash
# Runs one pretraining job in one process over all local GPUs (one mesh), after the usual setup
# (launch/setup.sh) plus the CUDA build of the pinned jax.
# Usage: bash launch/gpu_workstation.sh [--dry-run] CONFIG [--config.x=y ...]
#   WORKDIR defaults to workdirs/<config name>; add --config.dtype=bfloat16 to compute in bf16
#   (parameters stay float32). --dry-run prints the commands and environment instead of running.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then
  DRY_RUN=1
  shift
fi
if [ "$#" -lt 1 ]; then
  echo "usage: $0 [--dry-run] CONFIG [--config.x=y ...]" >&2
  exit 2
fi
CONFIG="$1"
shift
NAME="$(basename "${CONFIG%%:*}" .py)"
WORKDIR="${WORKDIR:-workdirs/$NAME}"
VENV="${VENV:-.venv}"
JAX_VERSION="$(sed -n 's/^jax==//p' requirements.txt)"

# TensorFlow only feeds data (ssl_jax hides GPUs from it); this also keeps it from reserving
# memory should anything import it first. JAX may then take most of each GPU.
export TF_FORCE_GPU_ALLOW_GROWTH=true
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
# Overlaps the gradient all-reduce with the backward pass.
export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_enable_latency_hiding_scheduler=true"

run() {
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

if [ "$DRY_RUN" -eq 1 ]; then
  printf 'export %q\n' "TF_FORCE_GPU_ALLOW_GROWTH=$TF_FORCE_GPU_ALLOW_GROWTH" \
    "XLA_PYTHON_CLIENT_MEM_FRACTION=$XLA_PYTHON_CLIENT_MEM_FRACTION" "XLA_FLAGS=$XLA_FLAGS"
fi
run bash launch/setup.sh
run "$VENV/bin/python" -m pip install -q "jax[cuda12]==$JAX_VERSION"
run "$VENV/bin/python" -m ssl_jax.main "--config=$CONFIG" "--workdir=$WORKDIR" "$@"
