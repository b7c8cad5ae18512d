#!/usr/bin/env bash
# Runs every benchmark (each prints one JSON line) and writes the results table.
#
#   bash benchmarks/run_all.sh [--quick] [--gpu-extras | --no-gpu-extras]
#
# JSON lines go to benchmarks/results.jsonl and the markdown table to benchmarks/RESULTS.md.
# JAX runs on whatever device jax picks; the torch side (its own venv, made by torch_env.sh)
# uses CUDA when present. On a GPU the extras (ResNet-50 SimCLR bf16, BERT-base) run too.
# PYTHON: ssl_jax's interpreter (default .venv/bin/python, else python3).
set -euo pipefail

cd "$(dirname "$0")/.."
quick=()
extras=auto
for arg in "$@"; do
  case "$arg" in
    --quick) quick=(--quick) ;;
    --gpu-extras) extras=yes ;;
    --no-gpu-extras) extras=no ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export JAX_PYTHON="$PYTHON"
TORCH_PYTHON="$(bash benchmarks/torch_env.sh)"
export TORCH_PYTHON
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

backend="$("$PYTHON" -c 'import jax; print(jax.default_backend())' 2>/dev/null)"
if [[ "$extras" == auto ]]; then
  if [[ "$backend" == gpu || "$backend" == cuda ]]; then extras=yes; else extras=no; fi
fi

results=benchmarks/results.jsonl
: > "$results"
run() {
  echo "== $*" >&2
  "$PYTHON" "$@" | tee -a "$results"
}

run benchmarks/simclr_step.py "${quick[@]}"
run benchmarks/nt_xent_memory.py "${quick[@]}"
run benchmarks/augment_throughput.py "${quick[@]}"
run benchmarks/mlm_step.py "${quick[@]}"
if [[ "$extras" == yes ]]; then
  run benchmarks/simclr_step.py --model=resnet50 --stem=imagenet --image_size=224 \
    --dtype=bfloat16 --batch_size=256 --steps=5 "${quick[@]}"
  run benchmarks/mlm_step.py --model=bert_base --batch_size=32 --seq_len=512 \
    --max_predictions=80 --dtype=bfloat16 --steps=5 "${quick[@]}"
fi

"$PYTHON" benchmarks/results_table.py "$results" > benchmarks/RESULTS.md
cat benchmarks/RESULTS.md
