"""AMD/Xilinx Alveo cards under XRT (user function: xocl; management function: xclmgmt).

Each card shows up as PCI functions of one vendor sharing domain:bus:device:
the user function (marked by a ``user_pf`` file) carries the shell (``rom*/VBNV``
and ``rom*/timestamp``) and the DRM render node; the management function (a
``mgmt_pf`` file) carries ``instance``, which names ``/dev/xclmgmt<instance>``.
In a VM only the user function is passed through, so the management node is
optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from multidp import DeviceNode, Mount

from multidp_fpga.inventory import Grant, Observed
from multidp_fpga.naming import amd_resource
from multidp_fpga.sysfs import (
    PCI_ADDRESS,
    Resolver,
    SysfsError,
    listdir,
    natural_key,
    numa_node,
    read_attribute,
    read_dir,
)

#: Xilinx, AWS (F1), Arista, Advantech: the vendors XRT cards come under.
VENDORS = frozenset({"0x10ee", "0x1d0f", "0x3475", "0x13fe"})
PERMISSIONS = "rwm"


def qdma_instance(address: str) -> int:
    """XRT's instance number of a PCI function: domain·65536 + bus·256 + device·8 + function."""
    domain, bus, rest = address.split(":")
    device, function = rest.split(".")
    return int(domain, 16) * 65536 + int(bus, 16) * 256 + int(device, 16) * 8 + int(function, 16)


@dataclass
class Card:
    """The functions of one card found in a scan."""

    slot: str  # domain:bus:device
    user: Path | None = None
    mgmt: Path | None = None


class AmdScanner:
    """Reads the Alveo part of one sysfs tree into observed devices."""

    def __init__(self, sysfs_root: Path, dev_root: Path, legacy_names: bool, mount_nodes: bool) -> None:
        self.sysfs_root = sysfs_root
        self.dev_root = dev_root
        self.legacy_names = legacy_names
        self.mount_nodes = mount_nodes
        self.resolve = Resolver(sysfs_root)
        # A function's vendor never changes while it is present: read it once per (address, real path).
        self._vendors: dict[tuple[str, Path], str] = {}

    def scan(self, problems: dict[str, str]) -> list[Observed]:
        cards = self._cards(problems)
        devices = []
        for slot in sorted(cards, key=natural_key):
            card = cards[slot]
            if card.user is None:
                continue  # a management function alone: nothing a container can use
            devices.append(self._device(card, card.user, problems))
        return devices

    def _cards(self, problems: dict[str, str]) -> dict[str, Card]:
        devices_dir = self.sysfs_root / "bus/pci/devices"
        cards: dict[str, Card] = {}
        vendors: dict[tuple[str, Path], str] = {}
        try:
            addresses = read_dir(devices_dir)
        except SysfsError as exc:
            problems[f"pci:{devices_dir}"] = f"Alveo cards are not looked for: {exc}"
            addresses = []
        for address in addresses:
            if not PCI_ADDRESS.match(address):
                continue
            real = self.resolve(devices_dir / address)
            key = (address, real)
            vendor = self._vendors.get(key)
            if vendor is None:
                try:
                    vendor = read_attribute(real / "vendor").lower()
                except SysfsError as exc:
                    problems[f"vendor:{address}"] = f"PCI function {address} is skipped: {exc}"
                    continue
            vendors[key] = vendor
            if vendor not in VENDORS:
                continue
            slot = address.rpartition(".")[0]
            card = cards.setdefault(slot, Card(slot))
            if (real / "user_pf").exists():
                card.user = real
            elif (real / "mgmt_pf").exists():
                card.mgmt = real
        self._vendors = vendors  # forget functions that went away
        return cards

    def _shell(self, user: Path, entries: list[str]) -> tuple[str | None, str]:
        """(resource name, '') from the shell's rom files (``entries``: the user function's), or (None, why not)."""
        # Directories only: a PCI function with an expansion ROM also has a plain "rom" attribute.
        roms = [user / n for n in sorted(entries, key=natural_key) if n.startswith("rom") and (user / n).is_dir()]
        if not roms:
            return None, f"{user} has no rom* directory: no shell information (shell not loaded?)"
        try:
            shell = read_attribute(roms[0] / "VBNV")
            timestamp = read_attribute(roms[0] / "timestamp")
        except SysfsError as exc:
            return None, str(exc)
        if not shell or not timestamp:
            empty = roms[0] / ("VBNV" if not shell else "timestamp")
            return None, f"{empty} is empty"
        return amd_resource(shell, timestamp, self.legacy_names), ""

    def _device(self, card: Card, user: Path, problems: dict[str, str]) -> Observed:
        address = user.name
        entries = listdir(user)  # read once per scan: the shell's rom* and the qdma entries
        resource, unusable = self._shell(user, entries)
        faults: list[str] = []
        nodes: list[str] = []
        info = {"vendor": "amd", "pci": address}
        renders = [n for n in listdir(user / "drm") if n.startswith("renderD")]
        if not renders:
            faults.append(f"{user / 'drm'} has no renderD* entry: no DRM render node")
        else:
            nodes.append(f"dri/{renders[0]}")
            if not (self.dev_root / "dri" / renders[0]).exists():
                faults.append(f"device node {self.dev_root / 'dri' / renders[0]} is missing")
        if card.mgmt is not None:
            try:
                instance = read_attribute(card.mgmt / "instance")
                if not instance.isdigit():
                    raise SysfsError(card.mgmt / "instance", f"holds {instance!r}, not a number")
            except SysfsError as exc:
                problems[f"mgmt:{address}"] = f"Alveo card {address}: management node left out: {exc}"
            else:
                info["mgmt"] = card.mgmt.name
                self._optional(f"xclmgmt{instance}", nodes, problems, address)
        if any(n.startswith("dma.qdma.u") for n in entries):
            self._optional(f"xfpga/dma.qdma.u{qdma_instance(address)}.0", nodes, problems, address)
        device_nodes = tuple(DeviceNode.same_path(f"/dev/{n}", PERMISSIONS) for n in nodes)
        mounts = tuple(Mount(f"/dev/{n}", f"/dev/{n}") for n in nodes) if self.mount_nodes else ()
        return Observed(address, f"Alveo card {address}", resource, unusable, tuple(faults), numa_node(user), info,
                        Grant(device_nodes=device_nodes, mounts=mounts))

    def _optional(self, node: str, nodes: list[str], problems: dict[str, str], address: str) -> None:
        """A node the card may do without: handed out only when it exists."""
        if (self.dev_root / node).exists():
            nodes.append(node)
        else:
            problems[f"node:{address}:{node}"] = (f"Alveo card {address}: {self.dev_root / node} is missing; "
                                                  "containers get the card without it")
