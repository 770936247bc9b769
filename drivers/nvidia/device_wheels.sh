#!/usr/bin/env bash
# Download, here, the wheels device_check.sh installs on the GPU machine (Python 3.12, no network there),
# at the versions CI uses (requirements/constraints.txt): the committed gRPC stubs need grpcio and protobuf
# at least as new as their generator, and msgspec/watchdog are not in that machine's image.
# Then: device run with carry [".whl"] and command `bash drivers/nvidia/device_check.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
PACKAGES="grpcio typing-extensions protobuf msgspec watchdog pluggy PyYAML nvidia-ml-py"
if [ "${1:-}" = "--dra" ]; then  # device_dra.sh: the API client (lightkube) and its HTTP stack too
  PACKAGES="$PACKAGES lightkube lightkube-models httpx2 httpcore2 anyio h11 idna truststore"
fi
rm -rf .whl && mkdir .whl
for name in $PACKAGES; do
  pin=$(grep -i "^${name}==" requirements/constraints.txt)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pin"
done
ls -l .whl
