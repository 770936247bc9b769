"""Mellanox's k8s-rdma-shared-dev-plugin config (``{"periodicUpdateInterval": 300, "configList": [...]}``).

Read as its ``ReadConfig`` and ``ValidateConfigs`` read it (pkg/resources/resources_manager.go):
keys in any case, an unknown key ignored there and warned about here, a value of the wrong type
or a failed check refusing the whole file, in Mellanox's own words where it has them. Every entry
is a shared pool; as there, each pool filters over all devices (one HCA may be in several pools),
``ifNames`` match a function's first netdev only, and the IDs are ``0`` … ``rdmaHcaMax-1``.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from multidp_rdma.gojson import Kind, fields
from multidp_rdma.gomatch import inexact_notes
from multidp_rdma.poolconfig import PoolConfig, Selectors, hca_max_problem

PREFIX = "rdma"  # rdmaHcaResourcePrefix: the prefix of an entry that sets none
TOP: dict[str, Kind] = {"periodicUpdateInterval": "int", "configList": "list"}
ENTRY: dict[str, Kind] = {"resourceName": "str", "resourcePrefix": "str", "rdmaHcaMax": "int", "devices": "strs",
                          "selectors": "object"}
SELECTORS: dict[str, Kind] = {"vendors": "strs", "deviceIDs": "strs", "drivers": "strs", "ifNames": "strs",
                              "linkTypes": "strs"}
_NAME = re.compile(r"[a-zA-Z0-9_]+")  # validResourceName; fullmatch: RE2's $ is the very end, Python's not


class MellanoxConfig(msgspec.Struct):
    pools: list[PoolConfig]
    periodic_update_interval: int | None
    notes: list[str] = msgspec.field(default_factory=list)


def unknown_note(where: str, keys: list[str], incumbent: str) -> str:
    names = ", ".join(repr(k) for k in keys)
    return (f"{where}: {names} {'is not a key' if len(keys) == 1 else 'are not keys'} of {incumbent}'s config; "
            "it ignores them and so does multidp (check the spelling)")


def read_top(raw: dict[str, Any], where: str, notes: list[str]) -> tuple[list[Any], int | None]:
    """configList and periodicUpdateInterval of a whole Mellanox file."""
    values, unknown = fields(raw, TOP, "")
    if unknown:
        notes.append(unknown_note(where, unknown, "Mellanox's plugin"))
    periodic = values.get("periodicUpdateInterval")
    if periodic is not None and periodic < 0:
        raise ValueError(f'periodicUpdateInterval: invalid "periodicUpdateInterval" configuration "{periodic}"')
    return values.get("configList") or [], periodic


def mellanox_pools(entries: list[Any], base: str, notes: list[str], strict: bool = False) -> list[PoolConfig]:
    """Shared pools from a configList; ``base`` names the list in messages.

    ``strict`` (a configList pasted into multidp's own file): an unknown key is refused, not warned about.
    """
    if not entries:
        raise ValueError(f"{base}: no resources configuration found (Mellanox's plugin stops on an empty configList)")
    pools: list[PoolConfig] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(entries):
        where = f"{base}[{index}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: a JSON {type(raw).__name__} where Go's decoder needs an object")
        values, unknown = fields(raw, ENTRY, where)
        chosen, unknown_selectors = fields(values.get("selectors") or {}, SELECTORS, f"{where}.selectors")
        unknown += [f"selectors.{key}" for key in unknown_selectors]
        if unknown and strict:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
        if unknown:
            notes.append(unknown_note(where, unknown, "Mellanox's plugin"))
        name = values.get("resourceName") or ""
        if not _NAME.fullmatch(name):
            raise ValueError(f'{where}.resourceName: error: resource name "{name}" contains invalid characters')
        if name in seen:
            raise ValueError(f'{where}.resourceName: error: resource name "{name}" already exists '
                             f"(also {base}[{seen[name]}])")
        seen[name] = index
        hca_max = values.get("rdmaHcaMax") or 0  # Go's zero value when absent
        if hca_max < 0 or hca_max > 100_000:
            raise ValueError(f"{where}.{hca_max_problem(hca_max)}")
        lists = {key: value for key, value in chosen.items() if value}  # an empty list selects nothing there
        devices = values.get("devices") or []
        if not lists and not devices:
            raise ValueError(f'{where}: error: configuration missmatch. neither "selectors" nor "devices" fields '
                             "exits (Mellanox's words)")
        if lists and devices:
            raise ValueError(f'{where}: configuration mismatch. Cannot specify both "selectors" and "devices" fields')
        try:
            selectors = Selectors(vendors=lists.get("vendors"), device_ids=lists.get("deviceIDs"),
                                  drivers=lists.get("drivers"), if_names=lists.get("ifNames") or devices or None,
                                  link_types=lists.get("linkTypes"))
        except ValueError as exc:
            raise ValueError(f"{where}.selectors: {exc}") from None
        notes.extend(inexact_notes(dict(lists), f"{where}.selectors", "Mellanox's plugin"))
        notes.extend(inexact_notes({"devices": devices}, where, "Mellanox's plugin"))
        try:
            pools.append(PoolConfig(resource_name=name, resource_prefix=values.get("resourcePrefix") or PREFIX,
                                    mode="shared", rdma_hca_max=hca_max, selectors=selectors))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return pools
