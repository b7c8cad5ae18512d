#!/usr/bin/env bash
# Sets up this machine (launch/setup.sh) and runs one pretraining job in a single process.
# Usage: bash launch/local.sh [CONFIG] [--config.x=y ...]
#   CONFIG defaults to configs/simclr_fashion_mnist.py; WORKDIR defaults to workdirs/<config name>.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
CONFIG="${1:-configs/simclr_fashion_mnist.py}"
shift || true
NAME="$(basename "${CONFIG%%:*}" .py)"
WORKDIR="${WORKDIR:-workdirs/$NAME}"
exec "${VENV:-.venv}/bin/python" -m ssl_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
