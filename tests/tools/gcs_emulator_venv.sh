#!/usr/bin/env bash
# Makes (once) the venv holding gcp-storage-emulator, the local GCS API the storage tests start.
# Its own venv: the emulator's pins need not agree with the project's. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${GCS_EMULATOR_VENV:-$ROOT/.test-tools/gcs-emulator}"
PYTHON="${PYTHON:-python3}"
if [ -x "$VENV/bin/gcp-storage-emulator" ]; then
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q "gcp-storage-emulator==2026.7.19"
"$VENV/bin/gcp-storage-emulator" --help > /dev/null
echo "gcs emulator ready: $VENV/bin/gcp-storage-emulator"
