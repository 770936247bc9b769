"""The descriptive facts discovery reads about each GPU, for DRA's attributes (:mod:`.describe`).

Each is read once per discovery, never on a poll, and each one NVML or sysfs cannot tell becomes ''
(left out of the attributes) rather than a guess or an error that would hide the GPU.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

# NVML's nvmlDeviceArchitecture_t and nvmlBrandType_t, spelled as NVIDIA's go-nvlib spells them.
ARCHITECTURES = {2: "Kepler", 3: "Maxwell", 4: "Pascal", 5: "Volta", 6: "Turing", 7: "Ampere", 8: "Ada Lovelace",
                 9: "Hopper", 10: "Blackwell"}
BRANDS = {1: "Quadro", 2: "Tesla", 3: "NVS", 4: "Grid", 5: "GeForce", 6: "Titan", 7: "NvidiaVApps", 8: "NvidiaVPC",
          9: "NvidiaVCS", 10: "NvidiaVWS", 11: "NvidiaCloudGaming", 12: "QuadroRTX", 13: "NvidiaRTX",
          14: "Nvidia", 15: "GeForceRTX", 16: "TitanRTX"}

_ROOT_COMPLEX = re.compile(r"pci[0-9a-f]{4}:[0-9a-f]{2}")
_T = TypeVar("_T")


class GpuFacts(msgspec.Struct, frozen=True):
    """What a GPU is, beyond what serving it needs; '' where unknown."""

    brand: str = ""  # "Nvidia"
    architecture: str = ""  # "Hopper"
    compute_capability: str = ""  # "9.0.0"
    pcie_root: str = ""  # "pci0000:00"


def optional(nvml: Any, call: Callable[[], _T]) -> _T | None:
    """What ``call`` answers, or None when NVML cannot tell (an old driver, a GPU without it)."""
    try:
        return call()
    except nvml.NVMLError:
        return None


def cuda_version(value: object) -> str:
    """NVML's CUDA driver version (``12040``) as a semantic version (``12.4.0``); '' when unknown."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return ""
    return f"{value // 1000}.{value % 1000 // 10}.0"


def compute_capability(value: object) -> str:
    """NVML's ``(9, 0)`` as ``9.0.0``; '' when unknown."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        return ""
    major, minor = value
    if not isinstance(major, int) or not isinstance(minor, int) or major < 0 or minor < 0:
        return ""
    return f"{major}.{minor}.0"


def pcie_root(sysfs_root: Path, bus_id: str, log: logging.Logger) -> str:
    """The PCIe root complex (``pci0000:00``) a PCI device hangs off, from where sysfs puts it
    (``bus/pci/devices/<bus_id>`` links to ``devices/pci0000:00/.../<bus_id>``); '' when it does not tell."""
    listed = sysfs_root / "bus" / "pci" / "devices" / bus_id
    try:
        real = listed.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        log.debug("no PCIe root for %s: %s", bus_id, exc)
        return ""
    return next((part for part in real.parts if _ROOT_COMPLEX.fullmatch(part)), "")


def read_facts(nvml: Any, handle: Any, sysfs_root: Path, bus_id: str, log: logging.Logger) -> GpuFacts:
    """One GPU's facts: three NVML calls and one sysfs link, at discovery."""
    brand = optional(nvml, lambda: nvml.nvmlDeviceGetBrand(handle))
    architecture = optional(nvml, lambda: nvml.nvmlDeviceGetArchitecture(handle))
    capability = optional(nvml, lambda: nvml.nvmlDeviceGetCudaComputeCapability(handle))
    return GpuFacts(BRANDS.get(brand, "") if isinstance(brand, int) else "",
                    ARCHITECTURES.get(architecture, "") if isinstance(architecture, int) else "",
                    compute_capability(capability), pcie_root(sysfs_root, bus_id, log))
