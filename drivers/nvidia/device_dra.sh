#!/usr/bin/env bash
# The nvidia driver through DRA on this machine's real GPU(s) (device_dra.py); results in $OUT/device_dra.json.
# Run `bash drivers/nvidia/device_wheels.sh --dra` here first, then carry [".whl"]: the wheels go to /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
SITE=""
if [ -d .whl ]; then
  SITE="${DEVICE_SITE:-/tmp/site}"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
fi
export PYTHONPATH="src:drivers/nvidia/src${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"
export GRPC_VERBOSITY=ERROR
nvidia-smi -L || true
timeout 300 "$PY" drivers/nvidia/device_dra.py
