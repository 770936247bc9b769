"""Regenerate the v1beta1 stubs from the .proto (needs grpcio-tools).

Usage: ``python -m multidp.api.generate [OUTPUT_ROOT]``. With no argument the
stubs next to the .proto are rewritten; the stale-stub test writes them to a
temporary root and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO = "multidp/api/deviceplugin_v1beta1.proto"
SOURCE_ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ("deviceplugin_v1beta1_pb2.py", "deviceplugin_v1beta1_pb2.pyi", "deviceplugin_v1beta1_pb2_grpc.py")


def generate(output_root: Path) -> list[Path]:
    """Write the stubs under ``output_root/multidp/api``; return their paths."""
    from grpc_tools import protoc  # dev-only dependency

    (output_root / "multidp" / "api").mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{SOURCE_ROOT}",
        f"--python_out={output_root}",
        f"--pyi_out={output_root}",
        f"--grpc_python_out={output_root}",
        str(SOURCE_ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    return [output_root / "multidp" / "api" / name for name in OUTPUTS]


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE_ROOT
    for path in generate(root):
        print(path)
