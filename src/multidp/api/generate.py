"""Regenerate the kubelet API stubs from the .proto files (needs grpcio-tools).

Usage: ``python -m multidp.api.generate [OUTPUT_ROOT]``. With no argument the
stubs next to the .proto files are rewritten; the stale-stub test writes them
to a temporary root and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTOS = ("deviceplugin_v1beta1", "dra_v1", "drahealth_v1", "pluginregistration_v1", "podresources_v1")
SOURCE_ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = tuple(f"{name}{suffix}" for name in PROTOS for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))


def generate(output_root: Path) -> list[Path]:
    """Write the stubs under ``output_root/multidp/api``; return their paths."""
    from grpc_tools import protoc  # dev-only dependency

    (output_root / "multidp" / "api").mkdir(parents=True, exist_ok=True)
    for name in PROTOS:
        proto = f"multidp/api/{name}.proto"
        args = [
            "protoc",
            f"-I{SOURCE_ROOT}",
            f"--python_out={output_root}",
            f"--pyi_out={output_root}",
            f"--grpc_python_out={output_root}",
            str(SOURCE_ROOT / proto),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
    return [output_root / "multidp" / "api" / name for name in OUTPUTS]


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE_ROOT
    for path in generate(root):
        print(path)
