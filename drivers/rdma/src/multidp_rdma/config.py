"""The ``drivers.rdma`` config section: pools, selectors, health policy, polling.

Key names follow the incumbents (camelCase): ``resourceName``,
``resourcePrefix``, ``rdmaHcaMax`` and the selector keys of the Mellanox shared
device plugin, ``pfNames`` and ``pciAddresses`` in the SR-IOV plugin's manner.
msgspec checks types and unknown keys; :func:`resolve_pools` checks the rest and
raises :class:`multidp.ConfigError` naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import msgspec
from multidp.errors import ConfigError
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


class PoolConfig(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    resource_name: str
    resource_prefix: str | None = None
    mode: Literal["exclusive", "shared"] = "exclusive"
    rdma_hca_max: int | None = None  # shared pools: replicas advertised (Mellanox's rdmaHcaMax)
    include_issm: bool = False
    selectors: Selectors = msgspec.field(default_factory=Selectors)


class RdmaConfig(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pools: list[PoolConfig] | None = None
    port_health: Literal["any", "all"] = "any"
    poll_interval: float = 0.25
    rescan_interval: float = 30.0
    verbs: Literal["auto", "off"] = "auto"
    udev: Literal["auto", "off"] = "auto"


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
            raise ConfigError(f"{key}[{index}]", f"{value!r} is not a hexadecimal PCI ID such as 15b3")
        result.add(digits.zfill(4))
    return frozenset(result)


def _pci_addresses(values: list[str], key: str) -> frozenset[str]:
    result = set()
    for index, value in enumerate(values):
        text = value.strip().lower()
        if _SHORT_PCI.match(text):
            text = f"0000:{text}"
        if not _FULL_PCI.match(text):
            raise ConfigError(f"{key}[{index}]", f"{value!r} is not a PCI address such as 0000:3b:00.0")
        result.add(text)
    return frozenset(result)


def _link_types(values: list[str], key: str) -> frozenset[str]:
    result = set()
    for index, value in enumerate(values):
        link = _LINK_TYPE_ALIASES.get(value.strip().lower())
        if link is None:
            raise ConfigError(f"{key}[{index}]", f"{value!r} is not a link type (ether or infiniband)")
        result.add(link)
    return frozenset(result)


def _pf_names(values: list[str], key: str) -> tuple[PfName, ...]:
    result = []
    for index, value in enumerate(values):
        match = _PF_RANGE.match(value.strip())
        if not match:
            raise ConfigError(f"{key}[{index}]", f"{value!r} is not a PF name such as ens1f0 or ens1f0#0-3")
        first = int(match["first"]) if match["first"] else None
        last = int(match["last"]) if match["last"] else first
        if first is not None and last is not None and last < first:
            raise ConfigError(f"{key}[{index}]", f"{value!r}: the VF range ends before it starts")
        result.append(PfName(match["name"], first, last))
    return tuple(result)


def _names(values: list[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(v.strip() for v in values)


def _selection(selectors: Selectors, key: str) -> Selection:
    s, k = selectors, f"{key}."
    return Selection(
        vendors=None if s.vendors is None else _hex_ids(s.vendors, k + "vendors"),
        device_ids=None if s.device_ids is None else _hex_ids(s.device_ids, k + "deviceIDs"),
        drivers=_names(s.drivers),
        if_names=_names(s.if_names),
        link_types=None if s.link_types is None else _link_types(s.link_types, k + "linkTypes"),
        pci_addresses=None if s.pci_addresses is None else _pci_addresses(s.pci_addresses, k + "pciAddresses"),
        rdma_devices=_names(s.rdma_devices),
        pf_names=None if s.pf_names is None else _pf_names(s.pf_names, k + "pfNames"),
    )


def resolve_pools(config: RdmaConfig, section: str = "drivers.rdma") -> list[Pool]:
    """The configured pools (or the default one), checked; raise ConfigError naming the key."""
    if config.pools is None:
        return [Pool(DEFAULT_RESOURCE, DEFAULT_PREFIX, "hca", False, 1, False, Selection(), default=True)]
    pools: list[Pool] = []
    seen: dict[str, int] = {}
    for index, pool in enumerate(config.pools):
        key = f"{section}.pools[{index}]"
        name = pool.resource_name.strip()
        if "/" in name:
            if pool.resource_prefix is not None:
                raise ConfigError(f"{key}.resourceName",
                                  f"{name!r} already has a prefix; leave out resourcePrefix or the prefix here")
            resource = name
        else:
            resource = f"{pool.resource_prefix if pool.resource_prefix is not None else DEFAULT_PREFIX}/{name}"
        problem = resource_name_problem(resource)
        if problem:
            raise ConfigError(f"{key}.resourceName", f"resource name {resource!r} {problem}")
        if resource in seen:
            raise ConfigError(f"{key}.resourceName", f"{resource!r} is already the resource of pools[{seen[resource]}]")
        seen[resource] = index
        shared = pool.mode == "shared"
        if pool.rdma_hca_max is not None and not shared:
            raise ConfigError(f"{key}.rdmaHcaMax", "applies to shared pools only (set mode: shared)")
        replicas = pool.rdma_hca_max if pool.rdma_hca_max is not None else DEFAULT_HCA_MAX
        if shared and not 1 <= replicas <= 100_000:
            raise ConfigError(f"{key}.rdmaHcaMax", f"must be between 1 and 100000, not {replicas}")
        prefix, _, short = resource.partition("/")
        pools.append(Pool(resource, prefix, short, shared, replicas if shared else 1, pool.include_issm,
                          _selection(pool.selectors, f"{key}.selectors")))
    return pools


def check_intervals(config: RdmaConfig, section: str = "drivers.rdma") -> None:
    if not 0.05 <= config.poll_interval <= 60:
        raise ConfigError(f"{section}.pollInterval", f"must be between 0.05 and 60 seconds, not {config.poll_interval}")
    if not 1 <= config.rescan_interval <= 3600:
        raise ConfigError(f"{section}.rescanInterval",
                          f"must be between 1 and 3600 seconds, not {config.rescan_interval}")
