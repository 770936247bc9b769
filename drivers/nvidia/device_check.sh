#!/usr/bin/env bash
# Run multidp with the nvidia driver against this machine's real GPU(s); results in $OUT/device_check.json.
# The GPU machine has Python 3.12 and no network, and its image lacks msgspec and watchdog (and may hold
# grpcio/protobuf older than the committed stubs need): run `bash drivers/nvidia/device_wheels.sh` here
# first, then carry [".whl"]; the wheels are installed into /tmp/site there. Without .whl, $PYTHON (or
# python3) must already have every dependency. Exit 0: every recording matched.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
SITE=""
if [ -d .whl ]; then
  SITE="${DEVICE_SITE:-/tmp/site}"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
fi
"$PY" -c 'import sys; print("python", sys.version.split()[0])'
export PYTHONPATH="src:drivers/nvidia/src${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"
export GRPC_VERBOSITY=ERROR
nvidia-smi -L || true
timeout 300 "$PY" drivers/nvidia/device_check.py "$@"
