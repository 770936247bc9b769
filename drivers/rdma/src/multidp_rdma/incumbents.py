"""The incumbents' config files, read as they are, turned into this driver's pools.

- Mellanox's k8s-rdma-shared-dev-plugin: ``{"periodicUpdateInterval": 300, "configList": [...]}``;
  every entry is a shared pool (``rdmaHcaMax`` replicas), prefix ``rdma`` unless it sets one.
- The SR-IOV network device plugin: ``{"resourceList": [...]}``; every entry that asks for RDMA
  (``isRdma``, in its selectors since 2020 or at the entry before) is an exclusive pool, prefix
  ``intel.com`` (that plugin's default) unless it sets one. Other entries stay with that plugin:
  each is skipped with one warning.

Both incumbents decode with Go's encoding/json, which ignores unknown keys; here an unknown key is
refused, naming the file and the key, since a misspelt selector would otherwise widen a pool. Keys
that are known but mean nothing to an RDMA pool are accepted and reported once each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import msgspec
from multidp import ConfigError, read_small_file, split_validation_error

from multidp_rdma.poolconfig import PoolConfig, Selectors

MELLANOX_PREFIX = "rdma"  # k8s-rdma-shared-dev-plugin's resource prefix when an entry sets none
SRIOV_PREFIX = "intel.com"  # the SR-IOV plugin's --resource-prefix default
T = TypeVar("T")
# SR-IOV selector keys named differently here (for messages in the file's own terms).
_SRIOV_RENAMES = {"deviceIDs": "devices"}
# SR-IOV selectors that narrow a pool by something this driver does not read: ignoring them
# would hand out devices the operator excluded, so an RDMA entry that sets one is refused.
_UNSUPPORTED = (("acpiIndexes", "acpi_indexes", "ACPI index"), ("pKeys", "p_keys", "InfiniBand partition key"),
                ("auxTypes", "aux_types", "auxiliary device type"))


class _Struct(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pass


class MellanoxSelectors(_Struct):
    vendors: list[str] | None = None
    device_ids: list[str] | None = msgspec.field(default=None, name="deviceIDs")
    drivers: list[str] | None = None
    if_names: list[str] | None = None
    link_types: list[str] | None = None


class MellanoxEntry(_Struct):
    resource_name: str
    rdma_hca_max: int  # required, as Mellanox documents it
    resource_prefix: str | None = None
    devices: list[str] | None = None  # the older form of selectors.ifNames
    selectors: MellanoxSelectors | None = None


class MellanoxFile(_Struct):
    config_list: list[MellanoxEntry]
    periodic_update_interval: int | None = None


class SriovSelectors(_Struct):
    vendors: list[str] | None = None
    devices: list[str] | None = None  # PCI device IDs
    drivers: list[str] | None = None
    pci_addresses: list[str] | None = None
    pf_names: list[str] | None = None
    root_devices: list[str] | None = None
    link_types: list[str] | None = None
    is_rdma: bool = False
    need_vhost_net: bool = False  # accepted, not applied: no vhost-net here
    vdpa_type: str | None = None  # accepted, not applied: vDPA is not RDMA
    ddp_profiles: list[str] | None = None  # accepted, not applied: Intel DDP profiles are not read here
    acpi_indexes: list[str] | None = None
    p_keys: list[str] | None = msgspec.field(default=None, name="pKeys")
    aux_types: list[str] | None = None


class SriovEntry(_Struct):
    resource_name: str
    resource_prefix: str | None = None
    device_type: Literal["netDevice", "accelerator", "auxNetDevice"] = "netDevice"
    is_rdma: bool = False  # where releases before 2020 read it
    exclude_topology: bool = False  # accepted, not applied: NUMA nodes are always reported
    additional_info: dict[str, dict[str, str]] | None = None  # accepted, not applied
    selectors: SriovSelectors | list[SriovSelectors] | None = None


class SriovFile(_Struct):
    resource_list: list[SriovEntry]


@dataclass
class Incumbent:
    """What a file gives: pools, Mellanox's periodicUpdateInterval, and lines to log once."""

    pools: list[PoolConfig]
    periodic_update_interval: int | None = None
    notes: list[str] = field(default_factory=list)


def load_file(path: str) -> Incumbent:
    """Read an incumbent's config file; ValueError says what is wrong, starting with the file name."""
    try:
        # The host's bounded reader: a FIFO, /dev/zero or a huge file is refused, never read.
        text = read_small_file(path).decode("utf-8")
    except ConfigError as exc:
        raise ValueError(f"{path}: {exc.message}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid JSON: nested too deeply to read") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the top level must be a JSON object, not {type(raw).__name__}")
    if "configList" in raw and "resourceList" in raw:
        raise ValueError(f"{path}: has both configList (Mellanox's plugin) and resourceList (the SR-IOV plugin); "
                         "give one file per format")
    if "resourceList" in raw:
        sriov = _convert(path, raw, SriovFile)
        pools, notes = sriov_pools(sriov.resource_list, path)
        return Incumbent(pools, None, notes)
    if "configList" in raw:
        mellanox = _convert(path, raw, MellanoxFile)
        return Incumbent(mellanox_pools(mellanox.config_list, f"{path}: configList"),
                         mellanox.periodic_update_interval)
    raise ValueError(f"{path}: has neither configList (Mellanox's k8s-rdma-shared-dev-plugin) nor resourceList "
                     f"(the SR-IOV network device plugin); keys found: {', '.join(map(str, raw)) or 'none'}")


def _convert(path: str, raw: dict[str, Any], kind: type[T]) -> T:
    try:
        return msgspec.convert(raw, kind, str_keys=True)
    except msgspec.ValidationError as exc:
        key, message = split_validation_error(exc)
        raise ValueError(f"{path}: {key}: {message}" if key else f"{path}: {message}") from None


def _or_none(values: list[str] | None) -> list[str] | None:
    return values or None  # both incumbents read an empty list as "no constraint"


def _renamed(exc: ValueError, renames: dict[str, str]) -> str:
    text = str(exc)
    for ours, theirs in renames.items():
        if text.startswith(ours):
            return theirs + text[len(ours):]
    return text


def _selectors(where: str, renames: dict[str, str], **keys: Any) -> Selectors:
    try:
        return Selectors(**keys)  # msgspec runs __post_init__ on construction too
    except ValueError as exc:
        raise ValueError(f"{where}: {_renamed(exc, renames)}") from None


def _pool(where: str, **keys: Any) -> PoolConfig:
    try:
        return PoolConfig(**keys)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _unique(pools: list[PoolConfig], wheres: list[str]) -> None:
    seen: dict[str, str] = {}
    for pool, where in zip(pools, wheres, strict=True):
        if pool.resource in seen:
            raise ValueError(f"{where}: resource {pool.resource!r} is already the resource of {seen[pool.resource]}")
        seen[pool.resource] = where


def mellanox_pools(entries: list[MellanoxEntry], base: str) -> list[PoolConfig]:
    """Shared pools from Mellanox's configList; ``base`` names the list in messages."""
    pools, wheres = [], []
    for index, entry in enumerate(entries):
        where = f"{base}[{index}]"
        chosen = entry.selectors or MellanoxSelectors()
        lists = (chosen.vendors, chosen.device_ids, chosen.drivers, chosen.if_names, chosen.link_types)
        given = any(lists)
        # The Mellanox plugin refuses both of these; so does this driver, rather than guess.
        if given and entry.devices:
            raise ValueError(f"{where}: give selectors or devices, not both")
        if not given and not entry.devices:
            raise ValueError(f"{where}: give selectors or devices (netdev names); an entry with neither selects "
                             "nothing in Mellanox's plugin")
        selectors = _selectors(
            f"{where}.selectors", {}, vendors=_or_none(chosen.vendors), device_ids=_or_none(chosen.device_ids),
            drivers=_or_none(chosen.drivers), if_names=_or_none(chosen.if_names) or entry.devices,
            link_types=_or_none(chosen.link_types))
        pools.append(_pool(where, resource_name=entry.resource_name, mode="shared",
                           resource_prefix=entry.resource_prefix or MELLANOX_PREFIX,
                           rdma_hca_max=entry.rdma_hca_max, selectors=selectors))
        wheres.append(where)
    _unique(pools, wheres)
    return pools


def sriov_pools(entries: list[SriovEntry], path: str) -> tuple[list[PoolConfig], list[str]]:
    """Exclusive pools from the SR-IOV plugin's RDMA entries, and the lines to log about the rest."""
    pools: list[PoolConfig] = []
    wheres: list[str] = []
    notes: list[str] = []
    ignored: dict[str, str] = {}  # key → why, reported once per file
    for index, entry in enumerate(entries):
        where = f"{path}: resourceList[{index}]"
        pool = _sriov_pool(entry, where, notes, ignored)
        if pool is not None:
            pools.append(pool)
            wheres.append(where)
    _unique(pools, wheres)
    notes.extend(f"{path}: {key} is accepted and not applied: {why}" for key, why in ignored.items())
    return pools, notes


def _sriov_pool(entry: SriovEntry, where: str, notes: list[str], ignored: dict[str, str]) -> PoolConfig | None:
    """The pool of one resourceList entry, or None (with a note) when it is not this driver's."""
    name = f"{entry.resource_prefix or SRIOV_PREFIX}/{entry.resource_name}"
    many = isinstance(entry.selectors, list)
    objects = entry.selectors if isinstance(entry.selectors, list) else [entry.selectors or SriovSelectors()]
    if not objects:
        raise ValueError(f"{where}.selectors: an empty list (the SR-IOV plugin refuses it too)")
    rdma = [(i, s) for i, s in enumerate(objects) if entry.is_rdma or s.is_rdma]
    if not rdma:
        notes.append(f"{where} ({name}) is skipped: it does not ask for RDMA (isRdma); it stays with the "
                     "SR-IOV plugin")
        return None
    if entry.device_type != "netDevice":
        notes.append(f"{where} ({name}) is skipped: deviceType {entry.device_type} is not served by this driver; "
                     "it stays with the SR-IOV plugin")
        return None
    asking = {i for i, _ in rdma}
    notes.extend(f"{where}.selectors[{i}] ({name}) is skipped: it does not ask for RDMA (isRdma)"
                 for i in range(len(objects)) if i not in asking)
    if entry.exclude_topology:
        ignored["excludeTopology"] = "NUMA nodes are always reported here"
    if entry.additional_info:
        ignored["additionalInfo"] = "no extra environment variables are written here"
    selectors = []
    for i, chosen in rdma:
        at = f"{where}.selectors[{i}]" if many else f"{where}.selectors"
        _ignored_keys(chosen, at, ignored)
        selectors.append(_selectors(
            at, _SRIOV_RENAMES, vendors=_or_none(chosen.vendors), device_ids=_or_none(chosen.devices),
            drivers=_or_none(chosen.drivers), pci_addresses=_or_none(chosen.pci_addresses),
            pf_names=_or_none(chosen.pf_names), root_devices=_or_none(chosen.root_devices),
            link_types=_or_none(chosen.link_types), pfs_with_vfs=False))  # the plugin never takes such PFs
    return _pool(where, resource_name=entry.resource_name, resource_prefix=entry.resource_prefix or SRIOV_PREFIX,
                 selectors=selectors if many else selectors[0])


def _ignored_keys(chosen: SriovSelectors, at: str, ignored: dict[str, str]) -> None:
    for key, attribute, label in _UNSUPPORTED:
        if getattr(chosen, attribute):
            raise ValueError(f"{at}: {key}: selecting by {label} is not supported by this driver; ignoring it "
                             "would widen the pool, so remove it or keep this entry with the SR-IOV plugin")
    if chosen.need_vhost_net:
        ignored["needVhostNet"] = "no /dev/vhost-net is handed out here"
    if chosen.vdpa_type:
        ignored["vdpaType"] = "vDPA devices are not RDMA devices"
    if chosen.ddp_profiles:
        ignored["ddpProfiles"] = "Intel DDP profiles are not read here; they do not narrow the pool"
