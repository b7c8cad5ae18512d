#!/usr/bin/env bash
# Creates the PyTorch side of the benchmarks in its own venv, outside the repository, so that
# torch never enters ssl_jax's requirements. Idempotent: prints the venv's python when ready.
#
#   bash benchmarks/torch_env.sh            # venv at $TORCH_VENV (default /work/torch_venv)
#
# torch 2.14.1 + torchvision 0.29.1 are the pair that import together here (the CUDA build: it
# runs on the CPU and, on a GPU machine, on the GPU); transformers provides BertForMaskedLM.
set -euo pipefail

TORCH_VENV="${TORCH_VENV:-/work/torch_venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"

if [[ -x "$TORCH_VENV/bin/python" ]] \
  && "$TORCH_VENV/bin/python" -c "import torch, torchvision, transformers" 2>/dev/null; then
  echo "$TORCH_VENV/bin/python"
  exit 0
fi

echo "creating $TORCH_VENV (torch, torchvision, transformers; several GB)" >&2
"$PYTHON" -m venv "$TORCH_VENV"
"$TORCH_VENV/bin/pip" install --quiet --upgrade pip >&2
# shellcheck disable=SC2086  # TORCH_SPEC is a list of requirement specifiers
"$TORCH_VENV/bin/pip" install --quiet $TORCH_SPEC numpy >&2
"$TORCH_VENV/bin/pip" install --quiet transformers >&2
"$TORCH_VENV/bin/python" -c "import torch, torchvision, transformers" >&2
echo "$TORCH_VENV/bin/python"
