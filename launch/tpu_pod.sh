#!/usr/bin/env bash
# Runs one pretraining job on every worker of a Cloud TPU pod slice: makes the remote folder,
# copies this checkout there, builds a Python >= 3.11 venv with the runtime requirements and
# jax[tpu] on each worker, then starts ssl_jax.main on all workers detached from the ssh session
# (a dropped connection leaves it running); they join through jax.distributed (TPU detection).
# Usage: WORKDIR=gs://BUCKET/run bash launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE CONFIG [--config.x=y ...]
#        bash launch/tpu_pod.sh --logs TPU_NAME ZONE   (each worker's last log lines)
#        bash launch/tpu_pod.sh --stop TPU_NAME ZONE   (SIGTERM: the job saves, then exits)
#   WORKDIR must be visible to every worker (a GCS bucket or a shared mount); TFDS_DATA_DIR, if
#   set, is passed on (where the workers find prepared tfds data, e.g. gs://BUCKET/tfds);
#   PROJECT selects the gcloud project; REMOTE_DIR the folder on the workers (default ssl_jax,
#   in the home directory). --dry-run prints every command instead of running it.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
VERB=start
while [ "$#" -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --logs) VERB=logs ;;
    --stop) VERB=stop ;;
    *) break ;;
  esac
  shift
done
USAGE="usage: WORKDIR=gs://BUCKET/run $0 [--dry-run] [--logs|--stop] TPU_NAME ZONE [CONFIG ...]"
if [ "$#" -lt 2 ] || { [ "$VERB" = start ] && [ "$#" -lt 3 ]; }; then
  echo "$USAGE" >&2
  exit 2
fi
TPU_NAME="$1"
ZONE="$2"
shift 2
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
on_workers() {
  run "${GCLOUD[@]}" ssh "${TARGET[@]}" "--command=$1"
}
DIR="$(quote "$REMOTE_DIR")"
DIR="${DIR% }"

if [ "$VERB" = logs ]; then
  on_workers "tail -n 40 $DIR/train.log"
  exit 0
fi
if [ "$VERB" = stop ]; then
  on_workers "[ -f $DIR/train.pid ] && kill -TERM -- -\$(cat $DIR/train.pid) && echo stopping"
  exit 0
fi

CONFIG="$1"
shift
if [ -z "${WORKDIR:-}" ]; then
  echo "error: set WORKDIR to a path every worker sees (gs://BUCKET/run or a shared mount)." >&2
  exit 2
fi

on_workers "mkdir -p $DIR"
run "${GCLOUD[@]}" scp --recurse ./configs ./ssl_jax ./requirements.txt ./pyproject.toml \
  ./README.md "${TARGET[0]}:$REMOTE_DIR" "${TARGET[@]:1}"
# The TPU images' python3 is 3.10 (Ubuntu 22.04); jax and numpy need 3.11 or newer.
SETUP="cd $DIR && PY=\$(command -v python3.12 || command -v python3.11 || true)"
SETUP+=" && if [ -z \"\$PY\" ]; then sudo apt-get update -q"
SETUP+=" && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3.11 python3.11-venv"
SETUP+=" && PY=python3.11; fi"
SETUP+=" && { [ -x .venv/bin/python ] || \"\$PY\" -m venv .venv; }"
SETUP+=" && .venv/bin/python -m pip install -q --upgrade pip"
SETUP+=" && .venv/bin/python -m pip install -q -r requirements.txt $(quote "jax[tpu]==$JAX_VERSION")"
SETUP+=" && .venv/bin/python -m pip install -q --no-deps -e ."
on_workers "$SETUP"

ENVIRONMENT=""
if [ -n "${TFDS_DATA_DIR:-}" ]; then
  ENVIRONMENT="$(quote "TFDS_DATA_DIR=$TFDS_DATA_DIR")"
fi
# setsid + nohup: the job has its own session, so the end of the ssh session does not end it;
# its process group id goes to train.pid for --stop.
TRAIN="cd $DIR && { setsid nohup env $ENVIRONMENT"
TRAIN+=" .venv/bin/python -m ssl_jax.main $(quote "--config=$CONFIG" "--workdir=$WORKDIR" "$@")"
TRAIN+=" > train.log 2>&1 < /dev/null & echo \$! > train.pid; }"
on_workers "$TRAIN"
echo "started on every worker of $TPU_NAME; logs: bash $0 --logs $TPU_NAME $ZONE" >&2
