"""AMD MA35 transcoders: ``class/misc/ama_transcoder<N>`` with ``bus_id`` and ``device_info``.

AMD's plugin (``fpga.go``, ``GetAMADevices``) lists ``/dev/ama_transcoder*``, reads each one's
``bus_id`` (its PCI address: the device ID) and ``device_info`` (``key = value`` lines), and calls
every transcoder with a ``Product name`` line an ``MA35``. Here the class directory is the list (so
a missing device node shows as Unhealthy instead of hiding the device) and the rest is the same.
"""

from __future__ import annotations

from pathlib import Path

from multidp_fpga.amd import AmdDevice
from multidp_fpga.amdnames import MA35
from multidp_fpga.reads import Reads
from multidp_fpga.sysfs import PCI_ADDRESS, SysfsError, natural_key, numa_node, pcie_root, resolve

PREFIX = "ama_transcoder"
PRODUCT, SERIAL, DEVICE_ID = "product name", "product serial number", "pcie device id"


def parse_device_info(text: str) -> dict[str, str]:
    """``key = value`` lines, keys lowercased; AMD skips any line that is not exactly one '='."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("=")
        if len(parts) == 2:
            found.setdefault(parts[0].strip().casefold(), parts[1].strip())
    return found


class Ma35Scanner:
    """Reads the MA35 transcoders of one sysfs tree."""

    def __init__(self, sysfs_root: Path, dev_root: Path, reads: Reads | None = None) -> None:
        self.sysfs_root = sysfs_root
        self.class_dir = sysfs_root / "class/misc"
        self.pci_dir = sysfs_root / "bus/pci/devices"
        self.dev_root = dev_root
        self.reads = reads or Reads()

    def scan(self, problems: dict[str, str]) -> list[AmdDevice]:
        # No misc class (an empty listing): no transcoder driver loaded, nothing to say.
        names = [n for n in self.reads.listing(self.class_dir) if n.startswith(PREFIX)]
        devices = []
        for name in sorted(names, key=natural_key):
            device = self._device(name, problems)
            if device is not None:
                devices.append(device)
        return devices

    def _device(self, name: str, problems: dict[str, str]) -> AmdDevice | None:
        entry = self.class_dir / name
        try:
            address = self.reads.attribute(entry / "bus_id").lower()
            if not PCI_ADDRESS.match(address):
                raise SysfsError(entry / "bus_id", f"holds {address!r}, not a PCI address")
        except SysfsError as exc:
            problems[f"ma35:{name}"] = f"MA35 transcoder {name} is not served: {exc}"
            return None
        what = f"MA35 transcoder {name} ({address})"
        shell: str | None = None
        unusable = ""
        details: dict[str, str] = {}
        try:
            details = parse_device_info(self.reads.attribute(entry / "device_info"))
        except SysfsError as exc:
            unusable = str(exc)
        else:
            if PRODUCT in details:
                shell = MA35  # AMD's plugin names every product "MA35", whatever the line says
            else:
                unusable = f"{entry / 'device_info'} has no 'Product name' line"
        faults = () if self.reads.exists(self.dev_root / name) else (f"device node {self.dev_root / name} is missing",)
        info = {"vendor": "amd", "pci": address, "node": name}
        if details.get(PRODUCT):
            info["product"] = details[PRODUCT]
        pci = self.pci_dir / address
        listed = self.reads.exists(pci)
        return AmdDevice(address, what, shell, "0", unusable, uuid="ma35", device_id=details.get(DEVICE_ID, ""),
                         serial=details.get(SERIAL, ""), faults=faults,
                         numa=numa_node(pci if listed else None, lambda path: self.reads.attribute(path, once=True)),
                         nodes=(name,), info=info, kind="ma35",
                         pcie_root=pcie_root(self.sysfs_root, resolve(self.sysfs_root, pci) if listed else None))
