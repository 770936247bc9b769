"""A fake node for tests and ``--simulate``: sysfs and /dev/infiniband laid out as the kernel does.

Everything is written where the kernel puts it: PCI functions under
``sys/devices/pci<dom>:<bus>/<bridge>/<function>``, RDMA devices under the
function (or under an auxiliary device such as ``mlx5_core.rdma.0``), class
entries (``class/infiniband``, ``class/infiniband_verbs``,
``class/infiniband_mad``, ``class/net``, ``bus/pci/devices``) as relative
symlinks into ``devices/``, attribute files ending with a newline. Device nodes
under ``dev/infiniband`` are plain files (creating char devices needs
privileges a test does not have); the driver only checks that they exist.

:class:`RdmaSimulation` is the ``multidp_simulate`` answer: a :func:`standard_node`
whose fault travels the driver's normal path (port 1 of mlx5_0 rewritten to
``1: DOWN`` / ``3: Disabled`` in sysfs and announced as a verbs port event, see
:mod:`multidp_rdma.simevents`).
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import msgspec
from multidp import Simulation

from multidp_rdma.inventory import PHYS_STATES, PORT_STATES
from multidp_rdma.simevents import SimulatedKernel

RATES = {"InfiniBand": "100 Gb/sec (4X EDR)", "Ethernet": "25 Gb/sec (1X EDR)"}


class _Rdma(msgspec.Struct):
    name: str
    function: str
    home: Path  # the directory that holds infiniband/, infiniband_verbs/, infiniband_mad/
    chars: list[str] = msgspec.field(default_factory=list)


class FakeRdmaNode:
    """Builds and changes a fake node under ``root`` (``root/sys``, ``root/dev``)."""

    def __init__(self, root: Path, rdma_cm: bool = True) -> None:
        self.root = Path(root)
        self.sys = self.root / "sys"
        self.dev = self.root / "dev"
        self.functions: dict[str, Path] = {}
        self.rdma: dict[str, _Rdma] = {}
        self._uverbs = itertools.count()
        self._mad = itertools.count()
        self._aux = itertools.count()
        for klass in ("infiniband", "infiniband_verbs", "infiniband_mad", "net"):
            (self.sys / "class" / klass).mkdir(parents=True, exist_ok=True)
        self.write(self.sys / "class" / "infiniband_verbs" / "abi_version", "6")
        self.write(self.sys / "class" / "infiniband_mad" / "abi_version", "5")
        (self.sys / "bus" / "pci" / "devices").mkdir(parents=True, exist_ok=True)
        (self.dev / "infiniband").mkdir(parents=True, exist_ok=True)
        if rdma_cm:
            self.add_rdma_cm()

    # Files ---------------------------------------------------------------------------

    @staticmethod
    def write(path: Path, text: str) -> None:
        """Write an attribute with its newline; a rewrite is atomic, so a poller never reads half a file."""
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(path):
            path.write_text(text + "\n")
            return
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(text + "\n")
        os.replace(temporary, path)

    @staticmethod
    def link(path: Path, target: Path) -> None:
        """A relative symlink at ``path`` to ``target``, as sysfs makes them."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(os.path.relpath(target, path.parent))

    def node(self, name: str) -> Path:
        return self.dev / "infiniband" / name

    def add_rdma_cm(self) -> None:
        self.write(self.node("rdma_cm"), "")

    def remove_rdma_cm(self) -> None:
        self.node("rdma_cm").unlink(missing_ok=True)

    # PCI functions --------------------------------------------------------------------

    def add_function(self, address: str, *, vendor: str = "0x15b3", device: str = "0x1017",
                     driver: str = "mlx5_core", numa: int = 0, bridge: str = "0000:3a:00.0",
                     netdevs: Sequence[str] = (), pf: str | None = None, pci_class: str = "0x020000") -> Path:
        """A PCI function under ``bridge``; with ``pf`` it is that PF's next VF."""
        domain, bus = bridge.split(":")[:2]
        path = self.sys / "devices" / f"pci{domain}:{bus}" / bridge / address
        path.mkdir(parents=True, exist_ok=True)
        for attr, value in (("vendor", vendor), ("device", device), ("class", pci_class),
                            ("numa_node", str(numa)), ("subsystem_vendor", vendor)):
            self.write(path / attr, value)
        drivers = self.sys / "bus" / "pci" / "drivers" / driver
        drivers.mkdir(parents=True, exist_ok=True)
        self.link(path / "driver", drivers)
        self.link(self.sys / "bus" / "pci" / "devices" / address, path)
        for netdev in netdevs:
            net = path / "net" / netdev
            self.write(net / "operstate", "up")
            self.write(net / "type", "32" if netdev.startswith("ib") else "1")
            self.link(self.sys / "class" / "net" / netdev, net)
        if pf is not None:
            pf_path = self.functions[pf]
            index = len(list(pf_path.glob("virtfn*")))
            self.link(path / "physfn", pf_path)
            self.link(pf_path / f"virtfn{index}", path)
            self.write(pf_path / "sriov_numvfs", str(index + 1))
            self.write(pf_path / "sriov_totalvfs", "8")
        self.functions[address] = path
        return path

    # RDMA devices ----------------------------------------------------------------------

    def add_rdma(self, name: str, function: str, *, link_layer: str = "InfiniBand", ports: int = 1,
                 auxiliary: bool = False, netdev: str | None = None, uverbs: bool = True, mad: bool = True,
                 nodes: bool = True, guid: int = 0x0C42A1030065B2A4) -> Path:
        """An RDMA device on ``function`` with ``ports`` ACTIVE/LinkUp ports and its char devices."""
        home = self.functions[function]
        if auxiliary:  # kernels since 5.11: mlx5 RDMA devices sit on the auxiliary bus
            home = home / f"mlx5_core.rdma.{next(self._aux)}"
            home.mkdir(parents=True, exist_ok=True)
        path = home / "infiniband" / name
        words = f"{guid:016x}"
        for attr, value in (("node_type", "1: CA"), ("fw_ver", "16.35.2000"), ("hca_type", "MT4119"),
                            ("board_id", "MT_0000000010"), ("node_desc", f"fakehost {name}"),
                            ("node_guid", ":".join(words[i:i + 4] for i in range(0, 16, 4))),
                            ("sys_image_guid", ":".join(words[i:i + 4] for i in range(0, 16, 4)))):
            self.write(path / attr, value)
        self.link(path / "device", home)
        for number in range(1, ports + 1):
            port = path / "ports" / str(number)
            self.write(port / "link_layer", link_layer)
            self.write(port / "rate", RATES.get(link_layer, "10 Gb/sec (4X)"))
            self.write(port / "lid", "0x0" if link_layer == "Ethernet" else f"0x{number:x}")
            self.write(port / "cap_mask", "0x00010000" if link_layer == "Ethernet" else "0xa659e848")
            if link_layer == "Ethernet" and netdev:
                self.write(port / "gid_attrs" / "ndevs" / "0", netdev)
                self.write(port / "gid_attrs" / "types" / "0", "IB/RoCE v1")
            self.set_port(name, number, 4, 5, path=path)
        self.link(self.sys / "class" / "infiniband" / name, path)
        record = _Rdma(name, function, home)
        self.rdma[name] = record
        if uverbs:
            index = next(self._uverbs)
            self._char(record, "infiniband_verbs", f"uverbs{index}", {"ibdev": name, "dev": f"231:{192 + index}",
                                                                      "abi_version": "1"}, nodes)
        if mad:
            for number in range(1, ports + 1):
                index = next(self._mad)
                for kind, minor in (("umad", index), ("issm", 64 + index)):
                    self._char(record, "infiniband_mad", f"{kind}{index}",
                               {"ibdev": name, "port": str(number), "dev": f"231:{minor}"}, nodes)
        return path

    def _char(self, record: _Rdma, klass: str, name: str, attrs: dict[str, str], node: bool) -> None:
        entry = record.home / klass / name
        for attr, value in attrs.items():
            self.write(entry / attr, value)
        self.link(entry / "device", record.home)
        self.link(self.sys / "class" / klass / name, entry)
        record.chars.append(name)
        if node:
            self.write(self.node(name), "")

    def device_dir(self, name: str) -> Path:
        return self.rdma[name].home / "infiniband" / name

    def char_names(self, name: str) -> list[str]:
        return list(self.rdma[name].chars)

    def set_port(self, name: str, port: int, state: int, phys_state: int, path: Path | None = None) -> None:
        """Write ports/N/state and phys_state as the kernel shows them (``4: ACTIVE``)."""
        port_dir = (path or self.device_dir(name)) / "ports" / str(port)
        self.write(port_dir / "state", f"{state}: {PORT_STATES.get(state, 'UNKNOWN')}")
        self.write(port_dir / "phys_state", f"{phys_state}: {PHYS_STATES.get(phys_state, 'Unknown')}")

    def port_down(self, name: str, port: int = 1) -> None:
        self.set_port(name, port, 1, 3)  # DOWN / Disabled, as after "ip link set down"

    def port_up(self, name: str, port: int = 1) -> None:
        self.set_port(name, port, 4, 5)

    def rename_rdma(self, name: str, new_name: str) -> None:
        """udev renames the device (``mlx5_0`` → ``ibp59s0f0``): its directory, class entry and ibdev files."""
        record = self.rdma.pop(name)
        old_dir = record.home / "infiniband" / name
        old_dir.rename(record.home / "infiniband" / new_name)
        (self.sys / "class" / "infiniband" / name).unlink()
        self.link(self.sys / "class" / "infiniband" / new_name, record.home / "infiniband" / new_name)
        for char in record.chars:
            klass = "infiniband_verbs" if char.startswith("uverbs") else "infiniband_mad"
            self.write(record.home / klass / char / "ibdev", new_name)
        record.name = new_name
        self.rdma[new_name] = record

    def remove_rdma(self, name: str) -> None:
        """The device goes away (hot-unplug, driver unbind): class entries, sysfs dirs, nodes."""
        record = self.rdma.pop(name)
        (self.sys / "class" / "infiniband" / name).unlink()
        for char in record.chars:
            klass = "infiniband_verbs" if char.startswith("uverbs") else "infiniband_mad"
            (self.sys / "class" / klass / char).unlink(missing_ok=True)
            shutil.rmtree(record.home / klass / char, ignore_errors=True)
            self.node(char).unlink(missing_ok=True)
        shutil.rmtree(record.home / "infiniband" / name, ignore_errors=True)


def standard_node(root: Path) -> FakeRdmaNode:
    """A realistic node: an IB HCA, a dual-port card with port 2 down, a RoCE PF with two VFs."""
    node = FakeRdmaNode(root)
    node.add_function("0000:3b:00.0", device="0x101b", numa=0, bridge="0000:3a:00.0", netdevs=["ib0"],
                      pci_class="0x020700")
    node.add_rdma("mlx5_0", "0000:3b:00.0", link_layer="InfiniBand", auxiliary=True, guid=0x0C42A1030065B2A4)
    node.add_function("0000:5e:00.0", device="0x1003", driver="mlx4_core", numa=0, bridge="0000:5d:00.0",
                      netdevs=["ib1", "ib2"], pci_class="0x020700")
    node.add_rdma("mlx4_0", "0000:5e:00.0", link_layer="InfiniBand", ports=2, guid=0x0002C90300A1B2C3)
    node.port_down("mlx4_0", 2)
    node.add_function("0000:86:00.0", device="0x1017", numa=1, bridge="0000:85:00.0", netdevs=["ens5f0"])
    node.add_rdma("mlx5_1", "0000:86:00.0", link_layer="Ethernet", netdev="ens5f0", auxiliary=True,
                  guid=0x0C42A1030065C010)
    for index, vf in enumerate(("0000:86:00.2", "0000:86:00.3")):
        node.add_function(vf, device="0x1018", numa=1, bridge="0000:85:00.0", netdevs=[f"ens5f0v{index}"],
                          pf="0000:86:00.0")
        node.add_rdma(f"mlx5_{index + 2}", vf, link_layer="Ethernet", netdev=f"ens5f0v{index}", auxiliary=True,
                      guid=0x0C42A1030065C020 + index)
    return node


FAULTY_DEVICE = "mlx5_0"


class RdmaSimulation(Simulation):
    def __init__(self, workdir: Path) -> None:
        self.node: FakeRdmaNode = standard_node(workdir)
        self.sysfs_root = self.node.sys
        self.dev_root = self.node.dev
        self.kernel = SimulatedKernel()  # announces the changes below as the kernel's events would

    def inject_fault(self) -> str:
        self.node.port_down(FAULTY_DEVICE, 1)
        self.kernel.port_changed(FAULTY_DEVICE)
        return (f"{FAULTY_DEVICE} port 1 went DOWN/Disabled (ports/1/state and phys_state rewritten in sysfs, "
                "a verbs PORT_ERR event announced)")

    def clear_fault(self) -> str:
        self.node.port_up(FAULTY_DEVICE, 1)
        self.kernel.port_changed(FAULTY_DEVICE)
        return f"{FAULTY_DEVICE} port 1 is ACTIVE/LinkUp again (a verbs PORT_ACTIVE event announced)"
