"""One pool of the ``drivers.rdma`` section: its resource name, mode and selectors.

msgspec checks types and unknown keys; ``__post_init__`` checks the rest and
raises ValueError starting with the key, which msgspec reports with its path.
The value parsers take the key to name in their messages, so the incumbents'
files (``incumbents.py``) reuse them under their own key names.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec
from multidp import MAX_REPLICAS, resource_name_problem

from multidp_rdma.sysfs import PCI_ADDRESS

DEFAULT_PREFIX = "rdma"
DEFAULT_RESOURCE = "rdma/hca"
DEFAULT_HCA_MAX = 1000
LINK_TYPE_ALIASES = {
    "ether": "ether", "ethernet": "ether", "eth": "ether", "roce": "ether",
    "infiniband": "infiniband", "ib": "infiniband",
}
# "ens1f0", "ens1f0#3", "ens1f0#0-3", "ens1f0#0,2-7,9" (the SR-IOV plugin's syntax).
_PF_RANGE = re.compile(r"^(?P<name>[^#]+)(?:#(?P<indices>\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*))?$")
_SHORT_PCI = re.compile(r"^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")  # bus:device.function, matched lowercased


class Selectors(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Which devices a pool takes: values OR'ed within a key, keys AND'ed. Absent key: no constraint."""

    vendors: list[str] | None = None  # "15b3" (0x optional)
    device_ids: list[str] | None = msgspec.field(default=None, name="deviceIDs")  # "1017"
    drivers: list[str] | None = None  # "mlx5_core"
    if_names: list[str] | None = None  # netdev names of the function or its GIDs ("ens1f0", "ib0")
    link_types: list[str] | None = None  # "ether" | "infiniband"
    pci_addresses: list[str] | None = None  # "0000:3b:00.0" (or "3b:00.0")
    rdma_devices: list[str] | None = None  # RDMA device names ("mlx5_0")
    pf_names: list[str] | None = None  # a VF's PF netdev ("ens1f0", "ens1f0#0-3"); a PF's own
    root_devices: list[str] | None = None  # a VF's PF PCI address ("0000:3b:00.0#0-3"): VFs only
    pfs_with_vfs: bool | None = None  # false: leave out PFs that have VFs, as the SR-IOV plugin does

    def __post_init__(self) -> None:
        self.selection()  # raises ValueError naming the bad entry

    def selection(self) -> Selection:
        """The selectors normalised for matching."""
        return Selection(
            vendors=None if self.vendors is None else hex_ids(self.vendors, "vendors"),
            device_ids=None if self.device_ids is None else hex_ids(self.device_ids, "deviceIDs"),
            drivers=_names(self.drivers),
            if_names=_names(self.if_names),
            link_types=None if self.link_types is None else link_types(self.link_types, "linkTypes"),
            pci_addresses=None if self.pci_addresses is None else pci_addresses(self.pci_addresses, "pciAddresses"),
            rdma_devices=_names(self.rdma_devices),
            pf_names=None if self.pf_names is None else pf_names(self.pf_names, "pfNames"),
            root_devices=None if self.root_devices is None else root_devices(self.root_devices, "rootDevices"),
            pfs_with_vfs=self.pfs_with_vfs,
        )


class PoolConfig(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    resource_name: str
    resource_prefix: str | None = None
    mode: Literal["exclusive", "shared"] = "exclusive"
    rdma_hca_max: int | None = None  # shared pools: replicas advertised (Mellanox's rdmaHcaMax)
    include_issm: bool = False
    # One object, or a list of them: a device passing any of them (the SR-IOV plugin's form).
    selectors: Selectors | list[Selectors] = msgspec.field(default_factory=Selectors)

    def __post_init__(self) -> None:
        name = self.resource_name.strip()
        if "/" in name and self.resource_prefix is not None:
            raise ValueError(f"resourceName: {name!r} already has a prefix; leave out resourcePrefix or the prefix")
        problem = resource_name_problem(self.resource)
        if problem:
            raise ValueError(f"resourceName: resource name {self.resource!r} {problem}")
        if self.rdma_hca_max is not None and self.mode != "shared":
            raise ValueError("rdmaHcaMax: applies to shared pools only (set mode: shared)")
        if self.rdma_hca_max is not None and not 0 <= self.rdma_hca_max <= MAX_REPLICAS:
            raise ValueError(hca_max_problem(self.rdma_hca_max))
        if isinstance(self.selectors, list) and not self.selectors:
            raise ValueError("selectors: an empty list selects nothing; leave selectors out to take every device")

    @property
    def resource(self) -> str:
        """The extended resource name: ``<resourcePrefix>/<resourceName>`` unless the name has a prefix."""
        name = self.resource_name.strip()
        if "/" in name:
            return name
        return f"{self.resource_prefix if self.resource_prefix is not None else DEFAULT_PREFIX}/{name}"

    def selections(self) -> tuple[Selection, ...]:
        objects = self.selectors if isinstance(self.selectors, list) else [self.selectors]
        return tuple(s.selection() for s in objects)


def hca_max_problem(value: int) -> str:
    if value < 0:  # Mellanox's own words for the one value it refuses
        return f"rdmaHcaMax: Invalid value for rdmaHcaMax < 0: {value}"
    return (f"rdmaHcaMax: {value} is above {MAX_REPLICAS}, the most IDs multidp advertises for one resource "
            "(Mellanox's plugin has no bound; each ID is one pod's share); 0 advertises none")


class Rules(msgspec.Struct, frozen=True):
    """How the pools of one config behave: the incumbent's rules for its file, multidp's for its own.

    multidp's own ``pools`` follow the SR-IOV plugin: a device goes to the first pool that selects it.
    """

    origin: Literal["pools", "mellanox", "sriov"] = "pools"
    overlap: bool = False  # Mellanox: every pool filters all devices, so one HCA may be in several pools
    first_netdev: bool = False  # Mellanox: ifNames match a function's first netdev only
    sriov_pf: bool = False  # SR-IOV: pfNames/rootDevices select VFs only; PF names match in any case
    index_ids: bool = False  # shared pools advertise "0".."N-1" (Mellanox's IDs), not "<pool>::n"
    devinfo: bool = True  # write the Network Plumbing WG device-info file of exclusive devices at Allocate


class PfName(msgspec.Struct, frozen=True):
    """A ``pfNames`` or ``rootDevices`` entry: a PF (netdev name or PCI address), optionally VF indices."""

    name: str
    ranges: tuple[tuple[int, int], ...] = ()  # inclusive; empty: no index constraint

    def takes(self, vf_index: int | None) -> bool:
        if not self.ranges:
            return True
        # "ens1f0#0-3" names VFs of ens1f0 by index; the PF itself is none of them.
        return vf_index is not None and any(first <= vf_index <= last for first, last in self.ranges)


class Selection(msgspec.Struct, frozen=True):
    """Selectors normalised for matching (None: no constraint)."""

    vendors: frozenset[str] | None = None
    device_ids: frozenset[str] | None = None
    drivers: frozenset[str] | None = None
    if_names: frozenset[str] | None = None
    link_types: frozenset[str] | None = None
    pci_addresses: frozenset[str] | None = None
    rdma_devices: frozenset[str] | None = None
    pf_names: tuple[PfName, ...] | None = None
    root_devices: tuple[PfName, ...] | None = None
    pfs_with_vfs: bool | None = None
    # An incumbent's file (gomatch.py): the values above are its exact strings, pfNames and rootDevices
    # its raw items ("ens1f0#0-3"), and every comparison is the incumbent's.
    pf_items: tuple[str, ...] | None = None
    root_items: tuple[str, ...] | None = None
    exact: bool = False


class Pool(msgspec.Struct, frozen=True, kw_only=True):
    """One resource this driver serves, ready to match devices (a device passing any selection; keywords only)."""

    resource: str
    prefix: str
    short_name: str
    shared: bool
    replicas: int
    include_issm: bool
    selections: tuple[Selection, ...]
    default: bool = False  # the pool used when no pools are configured
    rules: Rules = Rules()


class Claim(msgspec.Struct, frozen=True):
    """One selector object of an SR-IOV file, in file order: whose devices it takes (initServers gives a
    device to the first object that selects it). ``resource`` None: the SR-IOV plugin's, served there."""

    resource: str | None
    selection: Selection
    rules: Rules


def hex_ids(values: list[str], key: str) -> frozenset[str]:
    result = set()
    for index, value in enumerate(values):
        digits = value.strip().lower().removeprefix("0x")
        if not re.fullmatch(r"[0-9a-f]{1,4}", digits):
            raise ValueError(f"{key}[{index}]: {value!r} is not a hexadecimal PCI ID such as 15b3")
        result.add(digits.zfill(4))
    return frozenset(result)


def normal_pci_address(value: str) -> str | None:
    text = value.strip().lower()
    if _SHORT_PCI.match(text):
        text = f"0000:{text}"
    return text if PCI_ADDRESS.match(text) else None


def pci_addresses(values: list[str], key: str) -> frozenset[str]:
    result = set()
    for index, value in enumerate(values):
        address = normal_pci_address(value)
        if address is None:
            raise ValueError(f"{key}[{index}]: {value!r} is not a PCI address such as 0000:3b:00.0")
        result.add(address)
    return frozenset(result)


def link_types(values: list[str], key: str) -> frozenset[str]:
    result = set()
    for index, value in enumerate(values):
        link = LINK_TYPE_ALIASES.get(value.strip().lower())
        if link is None:
            raise ValueError(f"{key}[{index}]: {value!r} is not a link type (ether or infiniband)")
        result.add(link)
    return frozenset(result)


def _pf_entry(value: str, where: str, example: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    match = _PF_RANGE.match(value.strip())
    if not match:
        raise ValueError(f"{where}: {value!r} is not {example}")
    ranges = []
    indices: str | None = match["indices"]
    for part in indices.split(",") if indices else ():
        first, _, last = part.partition("-")
        if last and int(last) < int(first):
            raise ValueError(f"{where}: {value!r}: the VF range ends before it starts")
        ranges.append((int(first), int(last or first)))
    return match["name"], tuple(ranges)


def pf_names(values: list[str], key: str) -> tuple[PfName, ...]:
    result = []
    for index, value in enumerate(values):
        name, ranges = _pf_entry(value, f"{key}[{index}]", "a PF name such as ens1f0 or ens1f0#0-3")
        result.append(PfName(name, ranges))
    return tuple(result)


def root_devices(values: list[str], key: str) -> tuple[PfName, ...]:
    result = []
    for index, value in enumerate(values):
        where, example = f"{key}[{index}]", "a PF's PCI address such as 0000:3b:00.0 or 0000:3b:00.0#0-3"
        name, ranges = _pf_entry(value, where, example)
        address = normal_pci_address(name)
        if address is None:
            raise ValueError(f"{where}: {value!r} is not {example}")
        result.append(PfName(address, ranges))
    return tuple(result)


def _names(values: list[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(v.strip() for v in values)
