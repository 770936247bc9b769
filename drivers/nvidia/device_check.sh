#!/usr/bin/env bash
# Run multidp with the nvidia driver against this machine's real GPU(s); results in $OUT/device_check.json.
# Needs a Python with multidp, multidp-nvidia and their dependencies (grpcio, protobuf, pluggy, PyYAML,
# msgspec, watchdog, nvidia-ml-py). The device machine has no network: carry a venv built beforehand with
#   python3 -m venv drivers/nvidia/.venv-device
#   drivers/nvidia/.venv-device/bin/pip install . ./drivers/nvidia      (non-editable, so it travels)
# (carry: ["drivers/nvidia/.venv-device"]), or point $PYTHON at one. Exit 0: every recording matched.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x drivers/nvidia/.venv-device/bin/python ]; then PY=drivers/nvidia/.venv-device/bin/python; else PY=python3; fi
fi
export PYTHONPATH="src:drivers/nvidia/src${PYTHONPATH:+:$PYTHONPATH}"
export GRPC_VERBOSITY=ERROR
nvidia-smi -L || true
timeout 300 "$PY" drivers/nvidia/device_check.py
