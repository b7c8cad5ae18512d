#!/usr/bin/env bash
# The one prepared check for a lent GPU machine (an H200 with jax 0.11, torch and transformers,
# but no TensorFlow, tfds, clu or ml_collections): ResNet-50 SimCLR bf16 images/s and MFU,
# BERT-base MLM tokens/s and NT-Xent at N = 65,536, each beside PyTorch on the same GPU.
# Budget: under 8 minutes (per-benchmark timeouts below); JSON lines go to $OUT (or benchmarks/).
#
#   here, once:   python3 -m pip download --no-deps -d .device_wheels ml_collections==1.1.0
#   device tool:  run(command="bash benchmarks/device_check.sh", carry=[".device_wheels"])
#   CPU smoke:    bash benchmarks/device_check.sh --smoke   (tiny sizes, minutes on 2 cores)
#
# Only the pure-Python ml_collections wheel travels (the configs build on it); ssl_jax itself
# imports without TensorFlow, and these benchmarks feed synthetic batches.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=()
if [ "${1:-}" = "--smoke" ]; then
  SMOKE=(--quick)
fi
PYTHON="${PYTHON:-python3}"
OUT_DIR="${OUT:-benchmarks}"
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
PY

bench() {
  local seconds="$1"
  shift
  echo "== $* (at most $seconds s)" >&2
  timeout "$seconds" "$PYTHON" "$@" | tee -a "$RESULTS" \
    || echo "{\"benchmark\": \"$1\", \"error\": \"exit ${PIPESTATUS[0]} (124: timed out)\"}" \
      | tee -a "$RESULTS"
}

bench 200 benchmarks/simclr_step.py --model=resnet50 --stem=imagenet --image_size=224 \
  --dtype=bfloat16 --batch_size=256 --steps=5 --rounds=2 "${SMOKE[@]}"
bench 150 benchmarks/mlm_step.py --model=bert_base --batch_size=32 --seq_len=512 \
  --max_predictions=80 --dtype=bfloat16 --steps=5 --rounds=2 "${SMOKE[@]}"
bench 90 benchmarks/nt_xent_memory.py --sizes=65536 --rounds=1 "${SMOKE[@]}"
echo "results: $RESULTS" >&2
