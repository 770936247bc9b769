"""AMD/Xilinx Alveo cards under XRT (user function: xocl; management function: xclmgmt).

Each card shows up as PCI functions of one vendor sharing domain:bus:device:
the user function (marked by a ``user_pf`` file) carries the shell (``rom*/VBNV``
and ``rom*/timestamp``) and the DRM render node; the management function (a
``mgmt_pf`` file) carries ``instance``, which names ``/dev/xclmgmt<instance>``.
In a VM only the user function is passed through, so the management node is
optional. A U30 card is two such devices behind one switch, with one serial
number. This module only reads; :mod:`multidp_fpga.amdserve` names, groups and
shares what it read.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from multidp_fpga.reads import Reads
from multidp_fpga.sysfs import PCI_ADDRESS, Resolver, SysfsError, natural_key, numa_node, pcie_root

#: Xilinx, AWS (F1), Arista, Advantech: the vendors XRT cards come under.
VENDORS = frozenset({"0x10ee", "0x1d0f", "0x3475", "0x13fe"})
PERMISSIONS = "rwm"
AWS_VENDOR = "0x1d0f"
AWS_SERIAL = "F1-Node"  # what AMD's plugin calls an F1 card, which has no serial number


class AmdDevice(msgspec.Struct, frozen=True):
    """One AMD device as a scan read it: an Alveo user function or an MA35 transcoder.

    ``shell`` is None when it cannot be read now (``unusable`` says why); ``nodes``
    are device nodes under /dev the container gets; ``faults`` make it Unhealthy.
    """

    address: str
    what: str
    shell: str | None
    timestamp: str = ""
    unusable: str = ""
    uuid: str = ""
    device_id: str = ""
    serial: str = ""
    faults: tuple[str, ...] = ()
    numa: tuple[int, ...] = ()
    nodes: tuple[str, ...] = ()
    info: dict[str, str] = msgspec.field(default_factory=dict)
    kind: str = "alveo"  # or "ma35"
    pcie_root: str = ""  # the root complex it hangs off in sys/devices ("pci0000:3a"); '' when not told


def qdma_instance(address: str) -> int:
    """XRT's instance number of a PCI function: domain·65536 + bus·256 + device·8 + function."""
    domain, bus, rest = address.split(":")
    device, function = rest.split(".")
    return int(domain, 16) * 65536 + int(bus, 16) * 256 + int(device, 16) * 8 + int(function, 16)


class Card(msgspec.Struct):
    """The functions of one card found in a scan."""

    slot: str  # domain:bus:device
    user: Path | None = None
    mgmt: Path | None = None


class AmdScanner:
    """Reads the Alveo part of one sysfs tree into observed devices."""

    def __init__(self, sysfs_root: Path, dev_root: Path, reads: Reads | None = None) -> None:
        self.sysfs_root = sysfs_root
        self.dev_root = dev_root
        self.reads = reads or Reads()
        # Not a recorded read: the link of a listed bus/pci/devices entry is fixed by the function's
        # place in the PCI hierarchy, and a change to the listing brings a full scan.
        self.resolve = Resolver(sysfs_root)
        # A function's vendor never changes while it is present: read it once per (address, real path).
        self._vendors: dict[tuple[str, Path], str] = {}

    def scan(self, problems: dict[str, str]) -> list[AmdDevice]:
        cards = self._cards(problems)
        vendors_seen = {real: vendor for (_, real), vendor in self._vendors.items()}
        devices = []
        for slot in sorted(cards, key=natural_key):
            card = cards[slot]
            if card.user is None:
                continue  # a management function alone: nothing a container can use
            devices.append(self._device(card, card.user, vendors_seen.get(card.user, ""), problems))
        return devices

    def _cards(self, problems: dict[str, str]) -> dict[str, Card]:
        devices_dir = self.sysfs_root / "bus/pci/devices"
        cards: dict[str, Card] = {}
        vendors: dict[tuple[str, Path], str] = {}
        try:
            addresses = self.reads.entries(devices_dir)
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
                    vendor = self.reads.attribute(real / "vendor", once=True).lower()
                except SysfsError as exc:
                    problems[f"vendor:{address}"] = f"PCI function {address} is skipped: {exc}"
                    self.reads.readlink(devices_dir / address)  # repeated while skipped: a mended link shows
                    continue
            vendors[key] = vendor
            if vendor not in VENDORS:
                continue
            slot = address.rpartition(".")[0]
            card = cards.setdefault(slot, Card(slot))
            if self.reads.exists(real / "user_pf"):
                card.user = real
            elif self.reads.exists(real / "mgmt_pf"):
                card.mgmt = real
        self._vendors = vendors  # forget functions that went away
        return cards

    def _shell(self, user: Path, entries: list[str]) -> tuple[str | None, str, str]:
        """(VBNV, timestamp, '') from the shell's rom files (``entries``: the user function's), or (None, '', why)."""
        # Directories only: a PCI function with an expansion ROM also has a plain "rom" attribute.
        roms = [user / n for n in sorted(entries, key=natural_key)
                if n.startswith("rom") and self.reads.is_dir(user / n)]
        if not roms:
            return None, "", f"{user} has no rom* directory: no shell information (shell not loaded?)"
        try:
            shell = self.reads.attribute(roms[0] / "VBNV")
            timestamp = self.reads.attribute(roms[0] / "timestamp")
        except SysfsError as exc:
            return None, "", str(exc)
        if not shell or not timestamp:
            empty = roms[0] / ("VBNV" if not shell else "timestamp")
            return None, "", f"{empty} is empty"
        return shell, timestamp, ""

    def _serial(self, user: Path, entries: list[str], shell: str | None, vendor: str) -> str:
        """The card's serial number (``xmc.u.*``, or ``hwmon_sdm.u.*`` on a V70), '' when there is none."""
        prefixes = ("hwmon_sdm.u.", "xmc.u.") if shell and "_v70" in shell else ("xmc.u.", "hwmon_sdm.u.")
        for prefix in prefixes:
            for name in sorted(entries, key=natural_key):
                if name.startswith(prefix):
                    try:
                        return self.reads.attribute(user / name / "serial_num")
                    except SysfsError:
                        break
        return AWS_SERIAL if vendor == AWS_VENDOR else ""

    def _device(self, card: Card, user: Path, vendor: str, problems: dict[str, str]) -> AmdDevice:
        address = user.name
        entries = self.reads.listing(user)  # read once per scan: rom*, xmc.u.*, and the qdma entries
        shell, timestamp, unusable = self._shell(user, entries)
        faults: list[str] = []
        nodes: list[str] = []
        info = {"vendor": "amd", "pci": address}
        renders = [n for n in self.reads.listing(user / "drm") if n.startswith("renderD")]
        if not renders:
            faults.append(f"{user / 'drm'} has no renderD* entry: no DRM render node")
        else:
            nodes.append(f"dri/{renders[0]}")
            if not self.reads.exists(self.dev_root / "dri" / renders[0]):
                faults.append(f"device node {self.dev_root / 'dri' / renders[0]} is missing")
        if card.mgmt is not None:
            try:
                instance = self.reads.attribute(card.mgmt / "instance")
                if not instance.isdigit():
                    raise SysfsError(card.mgmt / "instance", f"holds {instance!r}, not a number")
            except SysfsError as exc:
                problems[f"mgmt:{address}"] = f"Alveo card {address}: management node left out: {exc}"
            else:
                info["mgmt"] = card.mgmt.name
                self._optional(f"xclmgmt{instance}", nodes, problems, address)
        if any(n.startswith("dma.qdma.u") for n in entries):
            self._optional(f"xfpga/dma.qdma.u{qdma_instance(address)}.0", nodes, problems, address)
        serial = self._serial(user, entries, shell, vendor)
        if serial:
            info["serial"] = serial
        # The PCI device ID and NUMA node are fixed while the function is listed; logic_uuids follows the shell.
        return AmdDevice(address, f"Alveo card {address}", shell, timestamp, unusable,
                         uuid=self._optional_attribute(user / "logic_uuids")[-6:],
                         device_id=self._optional_attribute(user / "device", once=True), serial=serial,
                         faults=tuple(faults), numa=numa_node(user, lambda path: self.reads.attribute(path, once=True)),
                         nodes=tuple(nodes), info=info, pcie_root=pcie_root(self.sysfs_root, user))

    def _optional(self, node: str, nodes: list[str], problems: dict[str, str], address: str) -> None:
        """A node the card may do without: handed out only when it exists."""
        if self.reads.exists(self.dev_root / node):
            nodes.append(node)
        else:
            problems[f"node:{address}:{node}"] = (f"Alveo card {address}: {self.dev_root / node} is missing; "
                                                  "containers get the card without it")

    def _optional_attribute(self, path: Path, once: bool = False) -> str:
        """An attribute only names use (``logic_uuids``, ``device``): '' when it cannot be read."""
        try:
            return self.reads.attribute(path, once)
        except SysfsError:
            return ""
