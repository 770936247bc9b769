"""Intel FPGAs under the in-tree DFL driver or the out-of-tree OPAE driver.

The layout is picked as Intel's plugin picks it: OPAE when ``class/fpga``
exists, else DFL when ``class/fpga_region`` exists. Discovery starts from the
ports listed under each class entry; each port's FME is found through the PCI
function the port hangs under (its physical function for an SR-IOV VF), and
the FME carries the interface id of the region.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import msgspec
from multidp import DeviceNode

from multidp_fpga.describe import intel
from multidp_fpga.inventory import Grant, Observed
from multidp_fpga.naming import (
    INTEL_CDI_KIND,
    REGION_MODE_ANNOTATION,
    REGION_MODE_VALUE,
    intel_af_resource,
    intel_region_resource,
)
from multidp_fpga.reads import Reads
from multidp_fpga.sysfs import (
    ALL_F,
    Resolver,
    SysfsError,
    natural_key,
    numa_node,
    pci_function_of,
    pcie_root,
    read_uuid,
)


class Layout(msgspec.Struct, frozen=True):
    """Where one kernel driver puts things in sysfs."""

    name: str
    class_dir: str  # under the sysfs root
    device_re: re.Pattern[str]  # class entries that hold ports
    port_re: re.Pattern[str]
    fme_glob: str  # FME directories, relative to the PCI function
    interface_id_glob: str  # the interface id file, relative to the FME directory


DFL = Layout("DFL", "class/fpga_region", re.compile(r"^region\d+$"), re.compile(r"^dfl-port\.\d+$"),
             "fpga_region/region*/dfl-fme.*", "dfl-fme-region.*/fpga_region/region*/compat_id")
OPAE = Layout("OPAE", "class/fpga", re.compile(r"^intel-fpga-dev\.\d+$"), re.compile(r"^intel-fpga-port\.\d+$"),
              "fpga/intel-fpga-dev.*/intel-fpga-fme.*", "pr/interface_id")


def pick_layout(sysfs_root: Path, reads: Reads) -> Layout | None:
    if reads.is_dir(sysfs_root / OPAE.class_dir):
        return OPAE
    if reads.is_dir(sysfs_root / DFL.class_dir):
        return DFL
    return None


class Fme(msgspec.Struct):
    name: str
    pci: str
    interface_id: str | None
    interface_problem: str
    numa: tuple[int, ...]
    ports: list[Port] = msgspec.field(default_factory=list)
    pcie_root: str = ""


class Port(msgspec.Struct):
    name: str
    pci: str
    afu_id: str | None
    afu_problem: str
    numa: tuple[int, ...]
    fme: Fme | None
    fme_problem: str = ""
    owner: str = ""  # the PCI function that owns the port's FME (the PF of a VF)
    pcie_root: str = ""  # the root complex its PCI function hangs off ("pci0000:3a"); '' when not told


def _usable_id(reads: Reads, path: Path, meaning: str) -> tuple[str | None, str]:
    """A valid id from ``path``, or None and why not (``meaning`` says what all f means)."""
    try:
        value = read_uuid(path, reads.attribute)
    except SysfsError as exc:
        return None, str(exc)
    if value == ALL_F:
        return None, f"{path} is all f: {meaning}"
    return value, ""


class IntelScanner:
    """Reads the Intel part of one sysfs tree into observed devices."""

    def __init__(self, sysfs_root: Path, dev_root: Path, mode: str,
                 card_modes: Mapping[str, str] | None = None, reads: Reads | None = None) -> None:
        self.sysfs_root = sysfs_root
        self.reads = reads or Reads()
        self.resolve = Resolver(sysfs_root, self.reads.readlink)
        self.dev_root = dev_root
        self.mode = mode
        self.card_modes = dict(card_modes or {})
        self.layout: Layout | None = None
        self.owners: set[str] = set()  # the PCI functions whose cards the last scan found

    def mode_of(self, pci: str) -> str:
        """The mode of the card whose FME hangs under PCI function ``pci`` (``cardModes`` over ``mode``)."""
        return self.card_modes.get(pci, self.mode)

    def unmatched_card_modes(self) -> list[str]:
        """The ``cardModes`` addresses that named no card in the last scan (a VF or port address, a typo)."""
        return [address for address in self.card_modes if address not in self.owners]

    def scan(self, problems: dict[str, str]) -> list[Observed]:
        self.layout = pick_layout(self.sysfs_root, self.reads)
        self.owners = set()
        if self.layout is None:
            return []
        ports = self._ports(self.layout, problems)
        self.owners = {p.fme.pci if p.fme else p.owner for p in ports}
        af = [p for p in ports if self.mode_of(p.fme.pci if p.fme else p.owner) == "af"]
        regions = [p for p in ports if p not in af]
        return [self._af_device(port) for port in af] + self._region_devices(regions, problems)

    # Discovery -------------------------------------------------------------------

    def _ports(self, layout: Layout, problems: dict[str, str]) -> list[Port]:
        class_dir = self.sysfs_root / layout.class_dir
        fmes: dict[Path, Fme] = {}
        ports: list[Port] = []
        try:
            entries = self.reads.entries(class_dir)
        except SysfsError as exc:
            problems[f"class:{class_dir}"] = f"Intel FPGAs ({layout.name}) are not served: {exc}"
            return ports
        for entry in sorted(entries, key=natural_key):
            if not layout.device_re.match(entry):
                continue
            device_dir = self.resolve(class_dir / entry)
            try:
                names = self.reads.entries(device_dir)
            except SysfsError as exc:
                # Its ports cannot even be listed: an empty list here would hide a whole card.
                problems[f"class:{class_dir / entry}"] = (
                    f"Intel {layout.name} class entry {class_dir / entry} is not read: {exc}; "
                    "the ports under it, if any, are not served")
                continue
            for name in sorted(names, key=natural_key):
                if layout.port_re.match(name):
                    ports.append(self._port(layout, device_dir / name, fmes))
        return ports

    def _port(self, layout: Layout, port_dir: Path, fmes: dict[Path, Fme]) -> Port:
        pci_dir = pci_function_of(self.resolve.root, port_dir)
        port = Port(port_dir.name, pci_dir.name if pci_dir else "", None, "", self._numa(pci_dir), None,
                    pcie_root=pcie_root(self.resolve.root, pci_dir))
        owner = pci_dir
        # A VF's port belongs to the FME of its physical function.
        physfn = pci_dir / "physfn" if pci_dir is not None else None
        is_vf = physfn is not None and self.reads.is_symlink(physfn)
        if physfn is not None and is_vf:
            owner = self.resolve(physfn)
        port.owner = owner.name if owner is not None else ""
        # Region modes ignore AFU ids, as Intel's plugin does.
        if self.mode_of(port.owner) == "af":
            port.afu_id, port.afu_problem = _usable_id(self.reads, port_dir / "afu_id", "no usable AFU is loaded")
        if pci_dir is None or owner is None:
            port.fme_problem = f"{port_dir} does not hang under a PCI function"
            return port
        if is_vf and not self.reads.is_dir(owner):
            port.fme_problem = f"{physfn} is a dangling link: the physical function of this VF is missing"
            return port
        candidates = sorted(self.reads.glob(owner, layout.fme_glob, once=True), key=lambda p: natural_key(p.name))
        if not candidates:
            port.fme_problem = f"no FME found under {owner / layout.fme_glob}"
            return port
        fme_dir = candidates[0]
        fme = fmes.get(fme_dir)
        if fme is None:
            fme = fmes[fme_dir] = self._fme(layout, fme_dir, owner)
        port.fme = fme
        fme.ports.append(port)
        return port

    def _fme(self, layout: Layout, fme_dir: Path, pci_dir: Path) -> Fme:
        id_files = sorted(self.reads.glob(fme_dir, layout.interface_id_glob, once=True))
        if id_files:
            interface_id, problem = _usable_id(self.reads, id_files[0], "the region reports no usable interface")
        else:
            interface_id, problem = None, f"no interface id file under {fme_dir / layout.interface_id_glob}"
        return Fme(fme_dir.name, pci_dir.name, interface_id, problem, self._numa(pci_dir),
                   pcie_root=pcie_root(self.resolve.root, pci_dir))

    def _driver(self) -> str:
        """The kernel driver whose layout the scan read: ``dfl`` or ``opae``."""
        return self.layout.name.lower() if self.layout else ""

    def _numa(self, pci_dir: Path | None) -> tuple[int, ...]:
        return numa_node(pci_dir, lambda path: self.reads.attribute(path, once=True))

    # Devices -----------------------------------------------------------------------

    def _node(self, name: str) -> tuple[DeviceNode, str]:
        """The device node of a port or FME, and a fault when it is missing under the dev root."""
        node = DeviceNode.same_path(f"/dev/{name}", "rw")
        present = self.reads.exists(self.dev_root / name)
        return node, "" if present else f"device node {self.dev_root / name} is missing"

    def _af_device(self, port: Port) -> Observed:
        node, missing = self._node(port.name)
        fme = port.fme
        info = {"vendor": "intel", "pci": port.pci}
        unusable = ""
        resource = None
        if fme is None:
            unusable = port.fme_problem
        elif fme.interface_id is None:
            unusable = fme.interface_problem
        elif port.afu_id is None:
            unusable = port.afu_problem
        else:
            resource = intel_af_resource(fme.interface_id, port.afu_id)
        if fme is not None:
            info["fme"] = fme.name
            if fme.interface_id:
                info["interface"] = fme.interface_id
        if port.afu_id:
            info["afu"] = port.afu_id
        attributes = intel(mode="af", driver=self._driver(), interface_id=fme.interface_id if fme else None,
                           fme=fme.name if fme else None, pci=port.pci, root=port.pcie_root, afu_id=port.afu_id,
                           port=port.name, virtual_function=port.owner != port.pci if port.pci else None)
        return Observed(port.name, f"Intel port {port.name}", resource, unusable, (missing,) if missing else (),
                        port.numa, info, Grant(device_nodes=(node,)), attributes)

    def _region_devices(self, ports: list[Port], problems: dict[str, str]) -> list[Observed]:
        fmes: dict[str, Fme] = {}
        for port in ports:
            if port.fme is None:
                problems[f"nofme:{port.name}"] = f"Intel port {port.name} is not served: {port.fme_problem}"
            else:
                fmes.setdefault(port.fme.name, port.fme)
        devices = []
        for fme in sorted(fmes.values(), key=lambda f: natural_key(f.name)):
            resource = intel_region_resource(fme.interface_id) if fme.interface_id else None
            faults = []
            nodes = []
            for name in [p.name for p in sorted(fme.ports, key=lambda p: natural_key(p.name))] + [fme.name]:
                node, missing = self._node(name)
                nodes.append(node)
                if missing:
                    faults.append(missing)
            info = {"vendor": "intel", "pci": fme.pci, "ports": ",".join(p.name for p in fme.ports)}
            if fme.interface_id:
                info["interface"] = fme.interface_id
            if self.mode_of(fme.pci) == "regiondevel":
                # Development mode, as Intel's: the FME node too, for programming from inside the container;
                # no CDI device and no annotation (Intel's getRegionDevelTree has none).
                grant = Grant(device_nodes=tuple(nodes))
            else:
                # The FME stays on the host: Intel's CRI hook, run by the CDI device named after the FME at
                # createRuntime, programs the region; the annotation is set too, as Intel's PostAllocate does.
                grant = Grant(device_nodes=tuple(nodes[:-1]),
                              annotations=((REGION_MODE_ANNOTATION, REGION_MODE_VALUE),),
                              cdi_devices=(f"{INTEL_CDI_KIND}={fme.name}",))
            attributes = intel(mode=self.mode_of(fme.pci), driver=self._driver(), interface_id=fme.interface_id,
                               fme=fme.name, pci=fme.pci, root=fme.pcie_root, ports=len(fme.ports))
            devices.append(Observed(fme.name, f"Intel FME {fme.name}", resource, fme.interface_problem,
                                    tuple(faults), fme.numa, info, grant, attributes))
        return devices
