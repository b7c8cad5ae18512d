#!/usr/bin/env bash
# The one prepared check for a lent GPU machine (an H200 with jax 0.11, torch and transformers,
# but no TensorFlow, tfds, clu or ml_collections): ResNet-50 SimCLR bf16 images/s and MFU,
# BERT-base MLM tokens/s and NT-Xent at N = 65,536, each beside PyTorch on the same GPU.
# Budget: under 8 minutes (per-benchmark timeouts below); JSON lines go to $OUT (or benchmarks/).
#
#   here, once:   python3 -m pip download --no-deps -d .device_wheels ml_collections==1.1.0
#   device tool:  run(command="bash benchmarks/device_check.sh", carry=[".device_wheels"])
#   CPU smoke:    PYTHON=.venv/bin/python bash benchmarks/device_check.sh --smoke
#     Before a GPU session spends its minutes: the same three benchmarks at toy sizes (about a
#     minute on 2 cores), with TensorFlow, tfds and clu hidden from Python as on that machine
#     (benchmarks/hide_modules), and the torch side skipped where PYTHON has no torch.
#
# Only the pure-Python ml_collections wheel travels (the configs build on it); ssl_jax itself
# imports without TensorFlow, and these benchmarks feed synthetic batches.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then
  SMOKE=1
  export SSL_JAX_HIDE_MODULES="tensorflow,tensorflow_datasets,tensorflow_text,clu"
  export PYTHONPATH="$PWD/benchmarks/hide_modules${PYTHONPATH:+:$PYTHONPATH}"
  # Compile time, not step time, is what a smoke run waits on.
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0"
fi
PYTHON="${PYTHON:-python3}"
OUT_DIR="${OUT:-benchmarks}"
[ "$SMOKE" -eq 1 ] && OUT_DIR="${OUT:-$(mktemp -d)}"  # toy numbers stay out of the tree
RESULTS="$OUT_DIR/device_check.jsonl"
mkdir -p "$OUT_DIR"
: > "$RESULTS"

if ! "$PYTHON" -c "import ml_collections" 2> /dev/null; then
  SITE="$(mktemp -d)"
  "$PYTHON" -m pip install -q --no-deps --no-index --find-links .device_wheels \
    --target "$SITE" ml_collections
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The image's own python has both jax and torch: both sides run on the same GPU.
export JAX_PYTHON="$PYTHON" TORCH_PYTHON="${TORCH_PYTHON:-$PYTHON}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}"
"$PYTHON" - << 'PY' | tee -a "$RESULTS"
import json, sys, time
t = time.perf_counter()
import ssl_jax  # noqa: F401
import jax
print(json.dumps({"check": "environment", "import_ssl_jax_s": round(time.perf_counter() - t, 2),
                  "tensorflow_imported": "tensorflow" in sys.modules, "jax": jax.__version__,
                  "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}))
if "tensorflow" in sys.modules:
    sys.exit("import ssl_jax imported tensorflow: this machine has none")
PY
NO_TORCH=()
if ! "$TORCH_PYTHON" -c "import torch" 2> /dev/null; then
  echo "note: $TORCH_PYTHON has no torch: JAX side only" >&2
  NO_TORCH=(--no_torch)
fi

FAILED=0
bench() {
  local seconds="$1"
  shift
  echo "== $* (at most $seconds s)" >&2
  if ! timeout "$seconds" "$PYTHON" "$@" | tee -a "$RESULTS"; then
    echo "{\"benchmark\": \"$1\", \"error\": \"exit ${PIPESTATUS[0]} (124: timed out)\"}" \
      | tee -a "$RESULTS"
    FAILED=1
  fi
}

if [ "$SMOKE" -eq 1 ]; then
  # The same code paths (bf16, ImageNet stem, MLM, NT-Xent) at sizes a CPU compiles in seconds.
  bench 90 benchmarks/simclr_step.py --model=resnet18 --stem=imagenet --image_size=32 \
    --dtype=bfloat16 --batch_size=4 --steps=1 --rounds=1 --peak_matmul_size=512 "${NO_TORCH[@]}"
  bench 60 benchmarks/mlm_step.py --model=bert_tiny --batch_size=4 --seq_len=32 \
    --max_predictions=5 --dtype=bfloat16 --steps=1 --rounds=1 "${NO_TORCH[@]}"
  bench 60 benchmarks/nt_xent_memory.py --sizes=256 --chunk_size=64 --rounds=1 "${NO_TORCH[@]}"
else
  bench 200 benchmarks/simclr_step.py --model=resnet50 --stem=imagenet --image_size=224 \
    --dtype=bfloat16 --batch_size=256 --steps=5 --rounds=2 "${NO_TORCH[@]}"
  bench 150 benchmarks/mlm_step.py --model=bert_base --batch_size=32 --seq_len=512 \
    --max_predictions=80 --dtype=bfloat16 --steps=5 --rounds=2 "${NO_TORCH[@]}"
  bench 90 benchmarks/nt_xent_memory.py --sizes=65536 --rounds=1 "${NO_TORCH[@]}"
fi
echo "results: $RESULTS" >&2
# Every benchmark ran (a failed one leaves its error line and the others still run).
exit "$FAILED"
