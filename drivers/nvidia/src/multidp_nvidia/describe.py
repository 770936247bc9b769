"""What DRA's scheduler is told about each GPU and MIG device (driver API 1.4 attributes and capacity).

Built once per discovery from what discovery read (:mod:`.facts`), and carried by each served
device, so a poll costs nothing more. Names are those NVIDIA's DRA driver publishes (``uuid``,
``productName``, ``cudaComputeCapability``, ...), so selectors written for it read the same here,
plus ``index`` and the standard ``resource.kubernetes.io/pciBusID`` and ``pcieRoot``. A MIG device
describes its GPU (product, architecture, versions, index, PCI place) and itself (``profile``,
``parentUUID``, ``migIndex``). A fact that is unknown, or too long for DRA, is left out.
"""

from __future__ import annotations

from multidp import SemVer

from multidp_nvidia.discovery import GpuInfo, Machine, MigInfo

Attribute = bool | int | str | SemVer
MAX_VALUE_BYTES = 64  # a DRA string or version attribute
PCI_BUS_ID = "resource.kubernetes.io/pciBusID"
PCIE_ROOT = "resource.kubernetes.io/pcieRoot"


def version(text: str) -> SemVer | str:
    """A dotted version as a SemVer when it is one once leading zeros go and missing parts are 0
    (driver ``580.159.04`` is ``580.159.4``, ``550.54`` is ``550.54.0``); '' as ''; anything else as it is."""
    parts = text.strip().split(".")
    if 1 <= len(parts) <= 3 and all(p.isascii() and p.isdigit() for p in parts):
        return SemVer(".".join(str(int(p)) for p in (*parts, "0", "0")[:3]))
    return text.strip()


def _fits(value: Attribute) -> bool:
    """Known ('' is not) and, for strings and versions, at most 64 bytes."""
    if isinstance(value, SemVer | str):
        text = value.value if isinstance(value, SemVer) else value
        return 0 < len(text.encode()) <= MAX_VALUE_BYTES
    return True


def _kept(attributes: dict[str, Attribute]) -> dict[str, Attribute]:
    return {name: value for name, value in attributes.items() if _fits(value)}


def _of_gpu(gpu: GpuInfo, machine: Machine) -> dict[str, Attribute]:
    """What a GPU and each of its MIG devices share."""
    return {
        "productName": gpu.name,
        "brand": gpu.facts.brand,
        "architecture": gpu.facts.architecture,
        "cudaComputeCapability": SemVer(gpu.facts.compute_capability) if gpu.facts.compute_capability else "",
        "driverVersion": version(machine.driver_version),
        "cudaDriverVersion": SemVer(machine.cuda_driver_version) if machine.cuda_driver_version else "",
        "index": gpu.index,
        PCI_BUS_ID: gpu.bus_id,
        PCIE_ROOT: gpu.facts.pcie_root,
    }


def gpu_attributes(gpu: GpuInfo, machine: Machine) -> dict[str, Attribute]:
    """A whole GPU's attributes."""
    return _kept({"type": "gpu", "uuid": gpu.uuid, **_of_gpu(gpu, machine)})


def gpu_capacity(gpu: GpuInfo) -> dict[str, str | int]:
    """A whole GPU's capacity: its memory in bytes."""
    return {"memory": gpu.memory_total} if gpu.memory_total > 0 else {}


def mig_attributes(gpu: GpuInfo, mig: MigInfo, machine: Machine) -> dict[str, Attribute]:
    """A MIG device's attributes: its own, then its GPU's."""
    slot = mig.index.rpartition(":")[2]
    own: dict[str, Attribute] = {"type": "mig", "uuid": mig.uuid, "parentUUID": gpu.uuid,
                                 "profile": "" if mig.profile == "unknown" else mig.profile}
    if slot.isdigit():
        own["migIndex"] = int(slot)
    return _kept({**own, **_of_gpu(gpu, machine)})


def mig_capacity(mig: MigInfo) -> dict[str, str | int]:
    """A MIG device's capacity: its memory in bytes."""
    return {"memory": mig.memory} if mig.memory > 0 else {}
