#!/usr/bin/env bash
# Runs one pretraining job on every worker of a Cloud TPU pod slice: copies this checkout to each
# worker, installs the pinned requirements with jax[tpu], then starts the same ssl_jax.main on all
# workers at once; they join through jax.distributed (detected from the TPU environment).
# Usage: WORKDIR=gs://BUCKET/run bash launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE CONFIG [--config.x=y ...]
#   WORKDIR must be visible to every worker (a GCS bucket or a shared mount); PROJECT selects the
#   gcloud project. --dry-run prints every command instead of running it.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then
  DRY_RUN=1
  shift
fi
if [ "$#" -lt 3 ]; then
  echo "usage: WORKDIR=gs://BUCKET/run $0 [--dry-run] TPU_NAME ZONE CONFIG [--config.x=y ...]" >&2
  exit 2
fi
TPU_NAME="$1"
ZONE="$2"
CONFIG="$3"
shift 3
if [ -z "${WORKDIR:-}" ]; then
  echo "error: set WORKDIR to a path every worker sees (gs://BUCKET/run or a shared mount)." >&2
  exit 2
fi
REMOTE_DIR="${REMOTE_DIR:-ssl_jax}"
JAX_VERSION="$(sed -n 's/^jax==//p' requirements.txt)"

# Prints the command, shell-quoted, in a dry run; runs it otherwise.
run() {
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# The remote shell re-parses --command, so every word of it is quoted here once.
quote() {
  printf '%q ' "$@"
}

GCLOUD=(gcloud compute tpus tpu-vm)
TARGET=("$TPU_NAME" "--zone=$ZONE" --worker=all)
if [ -n "${PROJECT:-}" ]; then
  TARGET+=("--project=$PROJECT")
fi

run "${GCLOUD[@]}" scp --recurse ./configs ./ssl_jax ./requirements.txt ./pyproject.toml \
  ./README.md "${TARGET[0]}:$REMOTE_DIR" "${TARGET[@]:1}"
SETUP="cd $(quote "$REMOTE_DIR") && python3 -m pip install -q -r requirements.txt"
SETUP+=" && python3 -m pip install -q $(quote "jax[tpu]==$JAX_VERSION")"
SETUP+=" && python3 -m pip install -q --no-deps -e ."
run "${GCLOUD[@]}" ssh "${TARGET[@]}" "--command=$SETUP"
TRAIN="cd $(quote "$REMOTE_DIR") && python3 -m ssl_jax.main"
TRAIN+=" $(quote "--config=$CONFIG" "--workdir=$WORKDIR" "$@")"
run "${GCLOUD[@]}" ssh "${TARGET[@]}" "--command=$TRAIN"
