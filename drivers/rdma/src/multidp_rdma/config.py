"""The ``drivers.rdma`` config section: pools, selectors, health policy, polling.

Key names follow the incumbents (camelCase): ``resourceName``,
``resourcePrefix``, ``rdmaHcaMax`` and the selector keys of the Mellanox shared
device plugin, ``pfNames`` and ``pciAddresses`` in the SR-IOV plugin's manner.
msgspec checks types and unknown keys; the structs' ``__post_init__`` checks the
rest (resource names, IDs, addresses, ranges) and raises ValueError starting
with the key, which msgspec reports with its path. So ``multidp config check``
and driver creation catch the same mistakes, each named by its key
(``drivers.rdma.pools[0].selectors: vendors[0]: 'mellanox' is not …``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import msgspec
from multidp.names import resource_name_problem

DEFAULT_PREFIX = "rdma"
DEFAULT_RESOURCE = "rdma/hca"
DEFAULT_HCA_MAX = 1000
_LINK_TYPE_ALIASES = {
    "ether": "ether", "ethernet": "ether", "eth": "ether", "roce": "ether",
    "infiniband": "infiniband", "ib": "infiniband",
}
_PF_RANGE = re.compile(r"^(?P<name>[^#]+)(?:#(?P<first>\d+)(?:-(?P<last>\d+))?)?$")
_SHORT_PCI = re.compile(r"^[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
_FULL_PCI = re.compile(r"^[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")


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

    def __post_init__(self) -> None:
        self.selection()  # raises ValueError naming the bad entry

    def selection(self) -> Selection:
        """The selectors normalised for matching."""
        return Selection(
            vendors=None if self.vendors is None else _hex_ids(self.vendors, "vendors"),
            device_ids=None if self.device_ids is None else _hex_ids(self.device_ids, "deviceIDs"),
            drivers=_names(self.drivers),
            if_names=_names(self.if_names),
            link_types=None if self.link_types is None else _link_types(self.link_types, "linkTypes"),
            pci_addresses=None if self.pci_addresses is None else _pci_addresses(self.pci_addresses, "pciAddresses"),
            rdma_devices=_names(self.rdma_devices),
            pf_names=None if self.pf_names is None else _pf_names(self.pf_names, "pfNames"),
        )


class PoolConfig(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    resource_name: str
    resource_prefix: str | None = None
    mode: Literal["exclusive", "shared"] = "exclusive"
    rdma_hca_max: int | None = None  # shared pools: replicas advertised (Mellanox's rdmaHcaMax)
    include_issm: bool = False
    selectors: Selectors = msgspec.field(default_factory=Selectors)

    def __post_init__(self) -> None:
        name = self.resource_name.strip()
        if "/" in name and self.resource_prefix is not None:
            raise ValueError(f"resourceName: {name!r} already has a prefix; leave out resourcePrefix or the prefix")
        problem = resource_name_problem(self.resource)
        if problem:
            raise ValueError(f"resourceName: resource name {self.resource!r} {problem}")
        if self.rdma_hca_max is not None and self.mode != "shared":
            raise ValueError("rdmaHcaMax: applies to shared pools only (set mode: shared)")
        if self.rdma_hca_max is not None and not 1 <= self.rdma_hca_max <= 100_000:
            raise ValueError(f"rdmaHcaMax: must be between 1 and 100000, not {self.rdma_hca_max}")

    @property
    def resource(self) -> str:
        """The extended resource name: ``<resourcePrefix>/<resourceName>`` unless the name has a prefix."""
        name = self.resource_name.strip()
        if "/" in name:
            return name
        return f"{self.resource_prefix if self.resource_prefix is not None else DEFAULT_PREFIX}/{name}"


class RdmaConfig(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pools: list[PoolConfig] | None = None
    port_health: Literal["any", "all"] = "any"
    poll_interval: float = 0.25
    rescan_interval: float = 30.0
    verbs: Literal["auto", "off"] = "auto"
    udev: Literal["auto", "off"] = "auto"

    def __post_init__(self) -> None:
        if not 0.05 <= self.poll_interval <= 60:
            raise ValueError(f"pollInterval: must be between 0.05 and 60 seconds, not {self.poll_interval}")
        if not 1 <= self.rescan_interval <= 3600:
            raise ValueError(f"rescanInterval: must be between 1 and 3600 seconds, not {self.rescan_interval}")
        seen: dict[str, int] = {}
        for index, pool in enumerate(self.pools or ()):
            if pool.resource in seen:
                raise ValueError(f"pools[{index}].resourceName: {pool.resource!r} is already the resource of "
                                 f"pools[{seen[pool.resource]}]")
            seen[pool.resource] = index


@dataclass(frozen=True)
class PfName:
    """A ``pfNames`` entry: a PF netdev, optionally limited to VF indices ``first..last``."""

    name: str
    first: int | None = None
    last: int | None = None


@dataclass(frozen=True)
class Selection:
    """Selectors normalised for matching (None: no constraint)."""

    vendors: frozenset[str] | None = None
    device_ids: frozenset[str] | None = None
    drivers: frozenset[str] | None = None
    if_names: frozenset[str] | None = None
    link_types: frozenset[str] | None = None
    pci_addresses: frozenset[str] | None = None
    rdma_devices: frozenset[str] | None = None
    pf_names: tuple[PfName, ...] | None = None


@dataclass(frozen=True)
class Pool:
    """One resource this driver serves, ready to match devices."""

    resource: str
    prefix: str
    short_name: str
    shared: bool
    replicas: int
    include_issm: bool
    selection: Selection
    default: bool = False  # the pool used when no pools are configured


def _hex_ids(values: list[str], key: str) -> frozenset[str]:
    result = set()
    for index, value in enumerate(values):
        digits = value.strip().lower().removeprefix("0x")
        if not re.fullmatch(r"[0-9a-f]{1,4}", digits):
            raise ValueError(f"{key}[{index}]: {value!r} is not a hexadecimal PCI ID such as 15b3")
        result.add(digits.zfill(4))
    return frozenset(result)


def _pci_addresses(values: list[str], key: str) -> frozenset[str]:
    result = set()
    for index, value in enumerate(values):
        text = value.strip().lower()
        if _SHORT_PCI.match(text):
            text = f"0000:{text}"
        if not _FULL_PCI.match(text):
            raise ValueError(f"{key}[{index}]: {value!r} is not a PCI address such as 0000:3b:00.0")
        result.add(text)
    return frozenset(result)


def _link_types(values: list[str], key: str) -> frozenset[str]:
    result = set()
    for index, value in enumerate(values):
        link = _LINK_TYPE_ALIASES.get(value.strip().lower())
        if link is None:
            raise ValueError(f"{key}[{index}]: {value!r} is not a link type (ether or infiniband)")
        result.add(link)
    return frozenset(result)


def _pf_names(values: list[str], key: str) -> tuple[PfName, ...]:
    result = []
    for index, value in enumerate(values):
        match = _PF_RANGE.match(value.strip())
        if not match:
            raise ValueError(f"{key}[{index}]: {value!r} is not a PF name such as ens1f0 or ens1f0#0-3")
        first = int(match["first"]) if match["first"] else None
        last = int(match["last"]) if match["last"] else first
        if first is not None and last is not None and last < first:
            raise ValueError(f"{key}[{index}]: {value!r}: the VF range ends before it starts")
        result.append(PfName(match["name"], first, last))
    return tuple(result)


def _names(values: list[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(v.strip() for v in values)


def resolve_pools(config: RdmaConfig) -> list[Pool]:
    """The configured pools, or the default one (the config was checked when it was built)."""
    if config.pools is None:
        return [Pool(DEFAULT_RESOURCE, DEFAULT_PREFIX, "hca", False, 1, False, Selection(), default=True)]
    pools: list[Pool] = []
    for pool in config.pools:
        shared = pool.mode == "shared"
        replicas = pool.rdma_hca_max if pool.rdma_hca_max is not None else DEFAULT_HCA_MAX
        prefix, _, short = pool.resource.partition("/")
        pools.append(Pool(pool.resource, prefix, short, shared, replicas if shared else 1, pool.include_issm,
                          pool.selectors.selection()))
    return pools
