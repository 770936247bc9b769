"""Builds sysfs and /dev trees shaped like a real node's, for tests and ``multidp demo``.

The shape follows the kernel's: devices live under ``sys/devices/pci…``; class
entries (``class/fpga_region/region0``, ``class/fpga/intel-fpga-dev.0``) and
``bus/pci/devices/<address>`` are relative symlinks into it; ``dev/char/<major:minor>``
links each character device to its sysfs directory. Device nodes under ``dev/``
are plain files (making real ones needs root); the driver only checks they exist.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import msgspec

INTEL = "0x8086"
XILINX = "0x10ee"
PORT_MAJOR, FME_MAJOR, DRM_MAJOR, XCLMGMT_MAJOR, MISC_MAJOR = 235, 236, 226, 240, 10
#: A U30 shell as XRT reports it (two of these per card, one serial number).
U30_SHELL, U30_TIMESTAMP = "xilinx_u30_gen3x4_base_2", "1598453230"


class Card(msgspec.Struct):
    """What the builder made for one card, to change or remove it later."""

    address: str
    kind: str
    sysfs: list[Path] = msgspec.field(default_factory=list)  # directories owned by the card
    links: list[Path] = msgspec.field(default_factory=list)
    nodes: list[Path] = msgspec.field(default_factory=list)
    ports: list[str] = msgspec.field(default_factory=list)
    fme: str = ""
    interface_file: Path | None = None
    afu_files: dict[str, Path] = msgspec.field(default_factory=dict)
    user_address: str = ""
    rom: Path | None = None


class FakeNode:
    """A fake node under ``root``: ``root/sys`` is the sysfs root, ``root/dev`` the dev root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.sys = self.root / "sys"
        self.dev = self.root / "dev"
        for sub in ("devices", "bus/pci/devices", "dev/char", "class"):
            (self.sys / sub).mkdir(parents=True, exist_ok=True)
        self.dev.mkdir(parents=True, exist_ok=True)
        self.cards: dict[str, Card] = {}
        self._next = {"region": 0, "port": 0, "fme": 0, "opae": 0, "render": 128, "ama": 0}

    # Low-level pieces ------------------------------------------------------------------

    def write(self, path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text if text.endswith("\n") or text == "" else text + "\n")
        return path

    def link(self, link: Path, target: Path, card: Card | None = None) -> None:
        """A relative symlink ``link`` → ``target``, as sysfs makes them."""
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        os.symlink(os.path.relpath(target, link.parent), link)
        if card is not None:
            card.links.append(link)

    def node(self, name: str, card: Card | None = None) -> Path:
        path = self.dev / name
        self.write(path, "")
        if card is not None:
            card.nodes.append(path)
        return path

    def char_device(self, directory: Path, major: int, minor: int, card: Card) -> None:
        self.write(directory / "dev", f"{major}:{minor}")
        self.link(self.sys / "dev/char" / f"{major}:{minor}", directory, card)

    def pci_function(self, address: str, vendor: str, device: str, numa: int, card: Card) -> Path:
        """A PCI function below its own root port, linked from bus/pci/devices."""
        domain, bus = address.split(":")[:2]
        upstream = max(int(bus, 16) - 1, 0)
        port = "00.0" if upstream != int(bus, 16) else "01.0"
        bridge = self.sys / "devices" / f"pci{domain}:{upstream:02x}" / f"{domain}:{upstream:02x}:{port}"
        directory = bridge / address
        for name, value in (("vendor", vendor), ("device", device), ("numa_node", str(numa)),
                            ("class", "0x120000")):
            self.write(directory / name, value)
        self.link(self.sys / "bus/pci/devices" / address, directory, card)
        card.sysfs.append(directory)
        return directory

    def _take(self, counter: str) -> int:
        value = self._next[counter]
        self._next[counter] += 1
        return value

    # Intel ---------------------------------------------------------------------------------

    def dfl_card(self, address: str, interface_id: str, afu_ids: list[str], numa: int = 0,
                 vendor: str = INTEL) -> Card:
        """An Intel card under the in-tree DFL driver: one FME and one port per AFU id."""
        card = self.cards[address] = Card(address, "dfl")
        pci = self.pci_function(address, vendor, "0x0b30", numa, card)
        container = pci / "fpga_region" / f"region{self._take('region')}"
        self.link(self.sys / "class/fpga_region" / container.name, container, card)
        fme = container / f"dfl-fme.{self._take('fme')}"
        card.fme = fme.name
        self.char_device(fme, FME_MAJOR, int(fme.name.split(".")[1]), card)
        self.write(fme / "ports_num", str(len(afu_ids)))
        pr_region = fme / "dfl-fme-region.0" / "fpga_region" / f"region{self._take('region')}"
        card.interface_file = self.write(pr_region / "compat_id", interface_id)
        self.link(self.sys / "class/fpga_region" / pr_region.name, pr_region, card)
        self.node(fme.name, card)
        for afu_id in afu_ids:
            port = container / f"dfl-port.{self._take('port')}"
            self._port(card, port, afu_id)
        return card

    def opae_card(self, address: str, interface_id: str, afu_ids: list[str], numa: int = 0) -> Card:
        """An Intel card under the out-of-tree OPAE driver."""
        card = self.cards[address] = Card(address, "opae")
        pci = self.pci_function(address, INTEL, "0x09c4", numa, card)
        number = self._take("opae")
        device = pci / "fpga" / f"intel-fpga-dev.{number}"
        self.link(self.sys / "class/fpga" / device.name, device, card)
        fme = device / f"intel-fpga-fme.{self._take('fme')}"
        card.fme = fme.name
        self.char_device(fme, FME_MAJOR, int(fme.name.split(".")[1]), card)
        card.interface_file = self.write(fme / "pr" / "interface_id", interface_id)
        for name, value in (("ports_num", str(len(afu_ids))), ("socket_id", str(numa)), ("bitstream_id", "0x0")):
            self.write(fme / name, value)
        self.node(fme.name, card)
        for afu_id in afu_ids:
            self._port(card, device / f"intel-fpga-port.{self._take('port')}", afu_id)
        return card

    def _port(self, card: Card, port: Path, afu_id: str) -> None:
        card.afu_files[port.name] = self.write(port / "afu_id", afu_id)
        self.char_device(port, PORT_MAJOR, int(port.name.split(".")[1]), card)
        self.node(port.name, card)
        card.ports.append(port.name)

    def set_afu_id(self, port: str, afu_id: str) -> None:
        card = next(c for c in self.cards.values() if port in c.afu_files)
        self.write(card.afu_files[port], afu_id)

    def set_interface_id(self, address: str, interface_id: str) -> None:
        interface_file = self.cards[address].interface_file
        assert interface_file is not None
        self.write(interface_file, interface_id)

    # AMD / Xilinx ----------------------------------------------------------------------------

    def alveo_card(self, slot: str, shell: str, timestamp: str, numa: int = 0, mgmt: bool = True,
                   qdma: bool = False, vendor: str = XILINX, device: str = "0x5001", serial: str | None = None,
                   uuid: str = "0b2c0ff4e0a1b2c3d4e5f60718293a4b") -> Card:
        """An Alveo card at ``slot`` (domain:bus:device): management function .0, user function .1.

        ``serial`` adds ``xmc.u.<n>/serial_num``; ``uuid`` is written to ``logic_uuids``.
        """
        user_address = f"{slot}.1"
        card = self.cards[user_address] = Card(user_address, "alveo", user_address=user_address)
        if mgmt:
            mgmt_dir = self.pci_function(f"{slot}.0", vendor, f"0x{int(device, 16) - 1:04x}", numa, card)
            instance = int(slot.split(":")[1], 16) << 8
            self.write(mgmt_dir / "mgmt_pf", "")
            self.write(mgmt_dir / "instance", str(instance))
            self.char_device(mgmt_dir / "xrt_mgmt" / f"xclmgmt{instance}", XCLMGMT_MAJOR, instance, card)
            self.node(f"xclmgmt{instance}", card)
        user = self.pci_function(user_address, vendor, device, numa, card)
        self.write(user / "user_pf", "")
        card.rom = user / "rom.u.0"
        self.write(card.rom / "VBNV", shell)
        self.write(card.rom / "timestamp", timestamp)
        self.write(user / "logic_uuids", uuid)
        if serial is not None:
            self.write(user / f"xmc.u.{int(slot.split(':')[1], 16)}" / "serial_num", serial)
        minor = self._take("render")
        self.char_device(user / "drm" / f"renderD{minor}", DRM_MAJOR, minor, card)
        self.node(f"dri/renderD{minor}", card)
        if qdma:
            (user / "dma.qdma.u.0").mkdir(parents=True, exist_ok=True)
            domain, bus, rest = user_address.split(":")
            dev_fn = rest.split(".")
            number = int(domain, 16) * 65536 + int(bus, 16) * 256 + int(dev_fn[0], 16) * 8 + int(dev_fn[1], 16)
            self.node(f"xfpga/dma.qdma.u{number}.0", card)
        return card

    def u30_card(self, slots: tuple[str, str], serial: str, numa: int = 0, shell: str = U30_SHELL,
                 timestamp: str = U30_TIMESTAMP) -> list[Card]:
        """A U30: two devices (each a management and a user function) with one serial number."""
        return [self.alveo_card(slot, shell, timestamp, numa=numa, device="0x503d", serial=serial) for slot in slots]

    def ma35(self, address: str, serial: str = "MA35D0001", numa: int = 0,
             product: str | None = "MA35D", device_id: str = "0x5070") -> Card:
        """An MA35 transcoder: a PCI function and ``class/misc/ama_transcoder<N>`` with bus_id and device_info."""
        card = self.cards[address] = Card(address, "ma35", user_address=address)
        pci = self.pci_function(address, "0x1022", device_id, numa, card)
        name = f"ama_transcoder{self._take('ama')}"
        misc = pci / "misc" / name
        self.write(misc / "bus_id", address)
        lines = ([f"Product name = {product}"] if product is not None else []) + [
            f"Product serial number = {serial}", f"PCIe device ID = {device_id}", "Firmware version = 1.0.0"]
        self.write(misc / "device_info", "\n".join(lines))
        self.char_device(misc, MISC_MAJOR, 100 + int(name.removeprefix("ama_transcoder")), card)
        self.link(self.sys / "class/misc" / name, misc, card)
        self.node(name, card)
        return card

    def other_pci_function(self, address: str, vendor: str = "0x144d", device: str = "0xa808") -> Card:
        """A PCI function no FPGA driver cares about (an NVMe drive, say)."""
        card = self.cards[address] = Card(address, "other")
        self.pci_function(address, vendor, device, 0, card)
        return card

    # Hot-plug --------------------------------------------------------------------------------

    def remove_card(self, address: str) -> None:
        """Unplug a card: its sysfs directories, links and device nodes go away."""
        card = self.cards.pop(address)
        for link in card.links:
            link.unlink(missing_ok=True)
        for directory in card.sysfs:
            shutil.rmtree(directory, ignore_errors=True)
        for node in card.nodes:
            node.unlink(missing_ok=True)
