"""What DRA's scheduler is told about each RDMA device (driver API 1.4 attributes).

Made at discovery from what discovery read (nothing more is read for it), so a poll costs nothing:
the RDMA device's name, link layer, netdev, port count and rate, its PCI function's IDs, driver and
SR-IOV place, and the standard ``resource.kubernetes.io/pciBusID`` and ``pcieRoot``. A fact that is
unknown is left out. A shared pool's device stands for every member: it carries what all its members
have in common (their link layer, say), never one member's name or address.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from multidp_rdma.inventory import Attribute, RdmaDevice

MAX_VALUE_BYTES = 64  # a DRA string attribute
PCI_BUS_ID = "resource.kubernetes.io/pciBusID"
PCIE_ROOT = "resource.kubernetes.io/pcieRoot"

_ROOT_COMPLEX = re.compile(r"pci[0-9a-f]{4,8}:[0-9a-f]{2}")
# The kernel writes a port's rate as "<n>[.5] Gb/sec (<width><speed>)" (ib_sysfs rate_show).
_RATE = re.compile(r"(\d+)(?:\.\d+)?\s*Gb/sec")


def pcie_root(function_path: Path) -> str:
    """The PCIe root complex (``pci0000:3a``) a PCI function hangs off: the first ``pci<domain>:<bus>``
    folder of its path under ``devices/``; '' when the path has none."""
    return next((part for part in function_path.parts if _ROOT_COMPLEX.fullmatch(part)), "")


def rate_gbps(rate: str) -> int | None:
    """A port's rate in whole Gb/s (``100 Gb/sec (4X EDR)`` is 100, ``2.5 Gb/sec (1X SDR)`` 2); None if unknown."""
    match = _RATE.match(rate.strip())
    return int(match.group(1)) if match else None


def _fits(value: Attribute) -> bool:
    if isinstance(value, str):
        return 0 < len(value.encode()) <= MAX_VALUE_BYTES
    return True


def attributes(device: RdmaDevice) -> dict[str, Attribute]:
    """One RDMA device's attributes."""
    found: dict[str, Attribute] = {"rdmaDevice": device.name}
    layers = [p.link_layer for p in device.ports if p.link_layer]
    if layers:
        found["linkLayer"] = "/".join(dict.fromkeys(layers))  # "InfiniBand/Ethernet" on a mixed VPI card
    if len(device.netdevs) == 1:
        found["netdev"] = device.netdevs[0]
    rates = [r for r in (rate_gbps(p.rate) for p in device.ports) if r is not None]
    if rates:
        found["rateGbps"] = max(rates)
    found["ports"] = len(device.ports)
    if device.fw_ver:
        found["firmwareVersion"] = device.fw_ver
    if device.node_guid:
        found["nodeGUID"] = device.node_guid
    pci = device.pci
    if pci is not None:
        found.update({"vendorID": pci.vendor, "deviceID": pci.device, "driver": pci.driver,
                      "virtualFunction": pci.is_vf, PCI_BUS_ID: pci.address, PCIE_ROOT: pci.pcie_root})
        if pci.pf_address:
            found["pfPciBusID"] = pci.pf_address
        if pci.vf_index is not None:
            found["vfIndex"] = pci.vf_index
    return {name: value for name, value in found.items() if _fits(value)}


def common(described: Sequence[Mapping[str, Attribute]]) -> dict[str, Attribute]:
    """What every one of ``described`` says alike, leaving out what names one device (a shared pool's
    device stands for them all)."""
    if not described:
        return {}
    personal = {"rdmaDevice", "netdev", "nodeGUID", "vfIndex", PCI_BUS_ID}
    first, *rest = described
    return {name: value for name, value in first.items()
            if name not in personal and all(other.get(name) == value for other in rest)}
