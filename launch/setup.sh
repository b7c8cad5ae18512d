#!/usr/bin/env bash
# One-time (idempotent) setup of a Debian machine: Debian's Fashion-MNIST, a venv with the pinned
# requirements and ssl_jax itself, and the tfds build of Fashion-MNIST from the Debian files.
# Usage: bash launch/setup.sh   (VENV=path to choose the venv folder; default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -d /usr/share/datasets/fashion-mnist ] || ! command -v shellcheck > /dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  # tests/test_launch.py lints the launch scripts with shellcheck.
  $SUDO apt-get install -y -q dataset-fashion-mnist shellcheck
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements.txt
"$VENV/bin/python" -m pip install -q --no-deps -e .
"$VENV/bin/python" -m ssl_jax.data.prepare fashion_mnist
