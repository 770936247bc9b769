"""Discovery: every RDMA device under a sysfs root, with its PCI function, ports and char devices.

Layout read (the kernel's InfiniBand sysfs): ``class/infiniband/<dev>`` links into
``devices/``; ``<dev>/device`` leads to the PCI function, directly (older
kernels) or through an auxiliary device such as ``mlx5_core.rdma.0`` whose
parent is the function (kernels since 5.11); ``class/infiniband_verbs/uverbsN``
and ``class/infiniband_mad/{umad,issm}N`` name their device in ``ibdev`` (and
their port in ``port``). A malformed or unreadable file is logged once, naming
the file; it makes its device Unhealthy (a problem) or, when the device cannot
be identified at all, leaves the device out.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

import msgspec

from multidp_rdma.describe import attributes, pcie_root
from multidp_rdma.inventory import ENCAP_TYPES, CharDevice, Discovery, PciFunction, Port, RdmaDevice
from multidp_rdma.sysfs import (
    PCI_ADDRESS,
    ProblemLog,
    SysfsError,
    SysfsRoot,
    list_names,
    natural_key,
    read_hex_id,
    read_numa_node,
    read_optional,
    read_text,
)

_UVERBS = re.compile(r"^uverbs\d+$")
_MAD = re.compile(r"^(umad|issm)\d+$")
# How far above an RDMA device's "device" link its PCI function may be (auxiliary devices: one).
_MAX_PCI_HOPS = 3


class _CharDevices(msgspec.Struct):
    uverbs: CharDevice | None = None
    umads: list[CharDevice] = msgspec.field(default_factory=list)
    issms: list[CharDevice] = msgspec.field(default_factory=list)


class _Reader:
    """One device's discovery: collects its problems (logged with its Unhealthy verdict, once)."""

    def __init__(self, root: SysfsRoot, vf_cache: dict[Path, dict[str, int]]) -> None:
        self.root = root
        self.problems: list[str] = []
        self._vf_cache = vf_cache

    def vf_indices(self, pf: Path) -> dict[str, int]:
        """A PF's VFs by PCI address → N of ``virtfnN`` (read once per PF and discovery pass)."""
        indices = self._vf_cache.get(pf)
        if indices is None:
            indices = {}
            for entry in self.names(pf):
                if entry.startswith("virtfn") and entry[6:].isdigit():
                    target = self.root.link_name(pf / entry)
                    if target:
                        indices[target] = int(entry[6:])
            self._vf_cache[pf] = indices
        return indices

    def note(self, exc: SysfsError) -> None:
        self.problems.append(str(exc))

    def optional(self, path: Path) -> str:
        try:
            return read_optional(path) or ""
        except SysfsError as exc:
            self.note(exc)
            return ""

    def names(self, path: Path) -> list[str]:
        try:
            return list_names(path)
        except SysfsError as exc:
            self.note(exc)
            return []


def discover(root: SysfsRoot, log: ProblemLog) -> Discovery:
    """Read every RDMA device under ``root``; report problems to ``log`` (the caller settles it)."""
    class_dir = root.path("class", "infiniband")
    chars = _char_devices(root, log)
    devices: list[RdmaDevice] = []
    skipped: dict[str, str] = {}
    try:
        names = list_names(class_dir)
    except SysfsError as exc:
        log.report(str(exc.path), f"cannot list RDMA devices: {exc}")
        names = []
    vf_cache: dict[Path, dict[str, int]] = {}
    for name in sorted(names, key=natural_key):
        reader = _Reader(root, vf_cache)
        try:
            devices.append(_read_device(reader, name, chars.get(name, _CharDevices())))
        except SysfsError as exc:
            skipped[name] = str(exc)
            log.report(str(exc.path), f"RDMA device {name} left out: {exc}")
    return Discovery(tuple(_with_ids(devices)), skipped)


def _with_ids(devices: list[RdmaDevice]) -> list[RdmaDevice]:
    """Device ID = PCI address (stable across renames); name-qualified when a function has several."""
    per_function: dict[str, int] = defaultdict(int)
    for device in devices:
        if device.pci is not None:
            per_function[device.pci.address] += 1
    result = []
    for device in devices:
        if device.pci is None:
            device_id = device.name
        elif per_function[device.pci.address] > 1:
            device_id = f"{device.pci.address}-{device.name}"
        else:
            device_id = device.pci.address
        result.append(msgspec.structs.replace(device, id=device_id, attributes=attributes(device)))
    return result


def _read_device(reader: _Reader, name: str, chars: _CharDevices) -> RdmaDevice:
    root = reader.root
    entry = root.path("class", "infiniband", name)
    path = root.resolve(entry)
    if not path.is_dir():
        raise SysfsError(entry, f"leads to {path}, which is not a directory")
    pci = _read_pci(reader, name, path)
    ports = _read_ports(reader, name, path)
    netdevs = list(pci.netdevs) if pci else []
    for port in ports:
        try:  # RoCE: the netdev behind GID 0; IB ports have none (the read fails with EINVAL)
            ndev = read_optional(port.path / "gid_attrs" / "ndevs" / "0")
        except SysfsError:
            ndev = None
        if ndev and ndev not in netdevs:
            netdevs.append(ndev)
    return RdmaDevice(
        name=name,
        path=path,
        pci=pci,
        node_type=reader.optional(path / "node_type"),
        node_guid=reader.optional(path / "node_guid"),
        fw_ver=reader.optional(path / "fw_ver"),
        ports=tuple(ports),
        uverbs=chars.uverbs,
        umads=tuple(sorted(chars.umads, key=lambda c: (c.port or 0, natural_key(c.name)))),
        issms=tuple(sorted(chars.issms, key=lambda c: (c.port or 0, natural_key(c.name)))),
        netdevs=tuple(netdevs),
        problems=tuple(reader.problems),
    )


def _pci_dir(root: SysfsRoot, device_dir: Path) -> Path | None:
    """The PCI function an RDMA device sits on, or None for a virtual device (rxe, siw)."""
    link = device_dir / "device"
    if not os.path.lexists(link):
        return None
    target = root.resolve(link)
    if not target.is_dir():
        raise SysfsError(link, f"leads to {target}, which does not exist")
    candidate = target
    for _ in range(_MAX_PCI_HOPS):
        if PCI_ADDRESS.match(candidate.name) and os.path.lexists(candidate / "vendor"):
            return candidate
        candidate = candidate.parent
    return None


def _read_pci(reader: _Reader, name: str, device_dir: Path) -> PciFunction | None:
    root = reader.root
    function = _pci_dir(root, device_dir)
    if function is None:
        return None
    ids: dict[str, str] = {}
    for attr in ("vendor", "device"):
        try:
            ids[attr] = read_hex_id(function / attr)
        except SysfsError as exc:
            reader.note(exc)
            ids[attr] = ""
    try:
        numa = read_numa_node(function / "numa_node")
    except SysfsError as exc:
        reader.note(exc)
        numa = None
    netdevs = tuple(reader.names(function / "net"))
    pf_address = pf_netdevs = vf_index = vf_count = None
    pf_link_type = ""
    if os.path.lexists(function / "physfn"):
        pf = root.resolve(function / "physfn")
        pf_address = pf.name
        pf_netdevs = tuple(reader.names(pf / "net"))
        pf_link_type = _encap_type(pf, pf_netdevs)
        vf_index = reader.vf_indices(pf).get(function.name)
    else:
        numvfs = reader.optional(function / "sriov_numvfs")
        vf_count = int(numvfs) if numvfs.isdigit() else None
    return PciFunction(
        address=function.name.lower(),
        vendor=ids["vendor"],
        device=ids["device"],
        driver=root.link_name(function / "driver") or "",
        numa_node=numa,
        parent=function.parent.name,
        netdevs=netdevs,
        pf_address=pf_address.lower() if pf_address else None,
        pf_netdevs=pf_netdevs if pf_netdevs is not None else netdevs,
        vf_index=vf_index,
        vf_count=vf_count,
        link_type=_encap_type(function, netdevs),
        pf_link_type=pf_link_type,
        pcie_root=pcie_root(function),
    )


def _encap_type(function: Path, netdevs: tuple[str, ...]) -> str:
    """The first netdev's link type as netlink names it (the incumbents' linkTypes); "" without netdev."""
    if not netdevs:
        return ""
    try:  # a netdev's type only narrows linkTypes: unreadable, it is no reason to call the device Unhealthy
        arphrd = read_optional(function / "net" / netdevs[0] / "type") or ""
    except SysfsError:
        return ""
    if not arphrd.isdigit():
        return ""
    return ENCAP_TYPES.get(int(arphrd), f"unknown{int(arphrd)}")  # netlink's encapType fallback


def _read_ports(reader: _Reader, name: str, device_dir: Path) -> list[Port]:
    ports = []
    for entry in reader.names(device_dir / "ports"):
        if not entry.isdigit():
            continue
        path = device_dir / "ports" / entry
        ports.append(Port(
            number=int(entry),
            path=path,
            link_layer=reader.optional(path / "link_layer"),
            rate=reader.optional(path / "rate"),
        ))
    ports.sort(key=lambda p: p.number)
    return ports


def _char_devices(root: SysfsRoot, log: ProblemLog) -> dict[str, _CharDevices]:
    """uverbs, umad and issm entries, by the RDMA device named in their ``ibdev``."""
    found: dict[str, _CharDevices] = defaultdict(_CharDevices)
    for klass, pattern in (("infiniband_verbs", _UVERBS), ("infiniband_mad", _MAD)):
        directory = root.path("class", klass)
        try:
            names = list_names(directory)
        except SysfsError as exc:
            log.report(str(exc.path), f"cannot list RDMA char devices: {exc}")
            continue
        for name in sorted(names, key=natural_key):
            if not pattern.match(name):
                continue  # abi_version and other class attributes
            entry = root.resolve(directory / name)
            try:
                ibdev = read_text(entry / "ibdev")
                port = int(read_text(entry / "port")) if klass == "infiniband_mad" else None
            except (SysfsError, ValueError) as exc:
                log.report(f"{directory / name}", f"RDMA char device {name} ignored: {exc}")
                continue
            chars = found[ibdev]
            if name.startswith("uverbs"):
                chars.uverbs = CharDevice(name)
            elif name.startswith("umad"):
                chars.umads.append(CharDevice(name, port))
            else:
                chars.issms.append(CharDevice(name, port))
    return found


def class_signature(root: SysfsRoot) -> tuple[tuple[str, int, str], ...]:
    """What changes when an RDMA device or char device appears, vanishes or is re-created.

    Cheap enough for every poll: three directory listings and one readlink per
    entry (a re-created sysfs entry gets a new inode; a renamed one a new name).
    """
    signature: list[tuple[str, int, str]] = []
    for klass in ("infiniband", "infiniband_verbs", "infiniband_mad"):
        try:
            with os.scandir(root.path("class", klass)) as entries:
                for entry in entries:
                    try:
                        target = os.readlink(entry.path)
                    except OSError:
                        target = ""
                    signature.append((f"{klass}/{entry.name}", entry.inode(), target))
        except OSError:
            signature.append((klass, -1, ""))
    signature.sort()
    return tuple(signature)
