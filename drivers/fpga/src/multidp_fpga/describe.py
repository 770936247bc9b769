"""What DRA's scheduler is told about each FPGA (driver API 1.4 attributes).

Made by the full scan from what it read anyway (ids, shells, PCI places), never by a poll: a poll
that finds every answer the same returns the last scan's devices, attributes and all. Intel devices
say their mode, kernel driver, interface and AFU ids, FME and ports; AMD devices their kind, shell,
timestamp, PCI device ID and serial number; both the standard ``resource.kubernetes.io/pciBusID`` and
``pcieRoot``. A fact that is unknown, or too long for DRA (64 bytes), is left out.
"""

from __future__ import annotations

import re

from multidp import SemVer

from multidp_fpga.amd import AWS_SERIAL, AmdDevice

Attribute = bool | int | str | SemVer
MAX_VALUE_BYTES = 64  # a DRA string attribute
PCI_BUS_ID = "resource.kubernetes.io/pciBusID"
PCIE_ROOT = "resource.kubernetes.io/pcieRoot"

_PCI_ID = re.compile(r"(?:0x)?([0-9a-f]{1,4})")


def pci_id(text: str) -> str:
    """A PCI ID as four lower-case hex digits (``0x5001`` is ``5001``); '' when it is none."""
    match = _PCI_ID.fullmatch(text.strip().lower())
    return match.group(1).zfill(4) if match else ""


def kept(attributes: dict[str, Attribute | None]) -> dict[str, Attribute]:
    """The known facts (not None, not ''), strings of at most 64 bytes."""
    return {name: value for name, value in attributes.items() if value is not None and value != ""
            and (not isinstance(value, str) or len(value.encode()) <= MAX_VALUE_BYTES)}


def intel(*, mode: str, driver: str, interface_id: str | None, fme: str | None, pci: str, root: str,
          afu_id: str | None = None, port: str | None = None, ports: int | None = None,
          virtual_function: bool | None = None) -> dict[str, Attribute]:
    """An Intel port (``af`` mode: ``afu_id``, ``port``) or FME (region modes: ``ports``)."""
    return kept({"vendor": "intel", "mode": mode, "driver": driver, "interfaceID": interface_id, "afuID": afu_id,
                 "fme": fme, "port": port, "ports": ports, "virtualFunction": virtual_function,
                 PCI_BUS_ID: pci, PCIE_ROOT: root})


def amd(device: AmdDevice, kind: str) -> dict[str, Attribute]:
    """An Alveo card (``kind`` ``alveo`` or ``u30``) or MA35 transcoder (``ma35``)."""
    serial = "" if device.serial == AWS_SERIAL else device.serial  # AMD's stand-in name, not a serial number
    return kept({"vendor": "amd", "type": kind, "shell": device.shell if kind != "ma35" else None,
                 "timestamp": device.timestamp if kind != "ma35" else None,
                 "productName": device.info.get("product"), "deviceID": pci_id(device.device_id),
                 "serialNumber": serial, PCI_BUS_ID: device.address, PCIE_ROOT: device.pcie_root})
