"""The SR-IOV network device plugin's config (``{"resourceList": [...]}``), its RDMA entries as pools.

Read as ``readConfig``, ``GetDeviceFilter`` and ``validConfigs`` read it (cmd/sriovdp/manager.go,
pkg/factory/factory.go): keys in any case, unknown keys ignored there and warned about here; an
entry-level value of the wrong type refuses the file (Go's decoder fails on it), while selectors
that do not decode skip their entry with a warning, as there. Only selector objects with
``isRdma: true`` are this driver's; every other entry or object stays with the SR-IOV plugin and
never fails the entries served here. Served entries follow that plugin's rules: the first selector
object in file order that selects a device gets it (``initServers`` and ``excludeAllocatedDevices``,
cmd/sriovdp/manager.go), served here or not, PFs that have VFs are left out, and issm is handed out.
"""

from __future__ import annotations

import re
from typing import Any

from multidp_rdma.gojson import GoTypeError, Kind, fields
from multidp_rdma.gomatch import exact_selection, inexact_notes
from multidp_rdma.mellanox import unknown_note
from multidp_rdma.poolconfig import Claim, PoolConfig, Rules, Selectors

PREFIX = "intel.com"  # the plugin's --resource-prefix default
INCUMBENT = "the SR-IOV plugin"
TOP: dict[str, Kind] = {"resourceList": "list"}
ENTRY: dict[str, Kind] = {"resourcePrefix": "str", "resourceName": "str", "deviceType": "str",
                          "excludeTopology": "bool", "selectors": "any", "additionalInfo": "info",
                          "SelectorObjs": "list"}  # []interface{}: any list or null; an object fails the file
SELECTORS: dict[str, Kind] = {
    "vendors": "strs", "devices": "strs", "drivers": "strs", "pciAddresses": "strs", "pfNames": "strs",
    "rootDevices": "strs", "linkTypes": "strs", "IsRdma": "bool", "acpiIndexes": "strs", "needVhostNet": "bool",
    "ddpProfiles": "strs", "vdpaType": "str", "pKeys": "strs"}
DEVICE_TYPES = ("netDevice", "accelerator", "auxNetDevice")
_NAME = re.compile(r"[a-zA-Z0-9_-]+")  # utils.ValidResourceName; fullmatch: RE2's $ is the very end
RULES = Rules(origin="sriov", sriov_pf=True)
# Selectors that narrow a pool by something this driver cannot read: ignoring one would widen the pool.
NARROWING = {"acpiIndexes": "ACPI index", "pKeys": "InfiniBand partition key",
             "ddpProfiles": "Intel DDP profile (read with the SR-IOV plugin's ddptool)"}
_RENAMES = {"deviceIDs": "devices"}  # multidp's key → the file's, for messages


def sriov_pools(raw: dict[str, Any], path: str, notes: list[str], prefix: str = PREFIX,
                claims: list[Claim] | None = None) -> list[PoolConfig]:
    """Exclusive pools from the entries that ask for RDMA; ``prefix`` is the plugin's --resource-prefix.

    ``claims`` gets every netDevice selector object in file order, the plugin's with resource None.
    """
    claims = [] if claims is None else claims
    top, unknown = fields(raw, TOP, "")
    if unknown:
        notes.append(unknown_note(path, unknown, INCUMBENT))
    pools: list[PoolConfig] = []
    seen: dict[str, str] = {}
    for index, entry in enumerate(top.get("resourceList") or []):
        where = f"{path}: resourceList[{index}]"
        if not isinstance(entry, dict):
            raise GoTypeError(f"resourceList[{index}]: a JSON {type(entry).__name__} where Go's decoder needs "
                              "an object (the SR-IOV plugin refuses this file too)")
        pool = _entry(entry, index, where, notes, prefix, claims)
        if pool is None:
            continue
        if pool.resource in seen:
            raise ValueError(f"resourceList[{index}].resourceName: resource name \"{pool.resource}\" already exists "
                             f"({seen[pool.resource]})")
        seen[pool.resource] = f"resourceList[{index}]"
        pools.append(pool)
    return pools


def _entry(raw: dict[str, Any], index: int, where: str, notes: list[str], prefix: str,
           claims: list[Claim]) -> PoolConfig | None:
    values, unknown = fields(raw, ENTRY, f"resourceList[{index}]")
    if unknown:
        notes.append(unknown_note(where, unknown, INCUMBENT))
    if values.get("SelectorObjs") is not None:
        notes.append(f"{where}: SelectorObjs is the SR-IOV plugin's own field, rebuilt from selectors as it reads "
                     "the file; it has no effect there or here")
    device_type = values.get("deviceType") or "netDevice"
    if device_type not in DEVICE_TYPES:
        raise ValueError(f"resourceList[{index}].deviceType: unsupported deviceType:  \"{device_type}\" "
                         f"(the SR-IOV plugin knows {', '.join(DEVICE_TYPES)})")
    name = f"{values.get('resourcePrefix') or prefix}/{values.get('resourceName') or ''}"
    label = f"{where} ({name})"
    if device_type != "netDevice":
        # Claims nothing served here: accelerator entries take class 0x12 functions, auxNetDevice entries
        # auxiliary devices, whose IDs never equal a netDevice's PCI address in excludeAllocatedDevices.
        notes.append(f"{label} is skipped: deviceType {device_type} is not served by this driver; it stays with "
                     "the SR-IOV plugin")
        return None
    objects = _selector_objects(values.get("selectors"), label, notes)
    if objects is None:
        return None  # not in the plugin's configList either: it takes nothing there
    rdma = [i for i, chosen in enumerate(objects) if chosen.get("IsRdma")]
    many = isinstance(values.get("selectors"), list)
    if not rdma:
        notes.append(f"{label} is skipped: it does not ask for RDMA (isRdma); it stays with the SR-IOV plugin, "
                     "which takes the devices it selects before any later entry can")
        claims.extend(_claim(None, chosen, f"{label}.selectors" + (f"[{i}]" if many else ""), notes)
                      for i, chosen in enumerate(objects))
        return None
    if len(rdma) < len(objects):
        others = ", ".join(f"selectors[{i}]" for i in range(len(objects)) if i not in rdma)
        notes.append(f"{label}: {others} do(es) not ask for RDMA (isRdma): those devices stay with the SR-IOV plugin, "
                     f"which serves them under the same name {name}, while multidp serves the RDMA ones: two plugins "
                     "registering one resource name replace each other at the kubelet; give those selectors a "
                     "resource of their own")
    if not _NAME.fullmatch(values.get("resourceName") or ""):
        raise ValueError(f"resourceList[{index}].resourceName: resource name \"{values.get('resourceName', '')}\" "
                         "contains invalid characters")
    if values.get("excludeTopology"):
        notes.append(f"{label}: excludeTopology is accepted and not applied: NUMA nodes are always reported here")
    if values.get("additionalInfo"):
        notes.append(f"{label}: additionalInfo is accepted and not applied: no extra variables are written here")
    selectors = [_selectors(objects[i], f"resourceList[{index}].selectors" + (f"[{i}]" if many else ""), label,
                            notes) for i in rdma]
    try:
        pool = PoolConfig(resource_name=values.get("resourceName") or "",
                          resource_prefix=values.get("resourcePrefix") or prefix, include_issm=True,
                          selectors=selectors if many else selectors[0])
    except ValueError as exc:
        raise ValueError(f"resourceList[{index}].{exc}") from None
    claims.extend(_claim(pool.resource if i in rdma else None, chosen,
                         f"{label}.selectors" + (f"[{i}]" if many else ""), notes) for i, chosen in enumerate(objects))
    return pool


def _claim(resource: str | None, chosen: dict[str, Any], at: str, notes: list[str]) -> Claim:
    """One selector object as the plugin matches it; one multidp cannot evaluate fully is taken to claim all
    its other selectors match (an unserved object: leaving a device out of ours is the safe side)."""
    if resource is None:
        unknown = [key for key in (*NARROWING, "vdpaType") if chosen.get(key)]
        if unknown:
            notes.append(f"{at}: multidp cannot evaluate {', '.join(unknown)}; it assumes the SR-IOV plugin "
                         "takes every device this object's other selectors match, and serves none of them")
    return Claim(resource, exact_selection(
        vendors=chosen.get("vendors"), device_ids=chosen.get("devices"), drivers=chosen.get("drivers"),
        pci_addresses=chosen.get("pciAddresses"), link_types=chosen.get("linkTypes"), pf_names=chosen.get("pfNames"),
        root_devices=chosen.get("rootDevices"), pfs_with_vfs=False), RULES)


def _selector_objects(raw: Any, label: str, notes: list[str]) -> list[dict[str, Any]] | None:
    """The entry's selector objects as parseObjectOrSlice decodes them; None (with a note) where it fails."""
    if raw is None:
        notes.append(f"{label} is skipped: it has no selectors (the SR-IOV plugin cannot read such an entry)")
        return None
    objects = raw if isinstance(raw, list) else [raw]
    problem = ""
    if not isinstance(raw, list | dict) or not all(isinstance(o, dict) for o in objects):
        problem = "selectors is neither an object nor a list of objects"
    elif not objects:
        problem = "error, need at least one selector, got 0"
    decoded: list[dict[str, Any]] = []
    for i, chosen in enumerate(objects if not problem else ()):
        try:
            values, unknown = fields(chosen, SELECTORS, f"selectors[{i}]" if isinstance(raw, list) else "selectors")
        except GoTypeError as exc:
            problem = str(exc).replace(" (the incumbent refuses this file too)", "")
            break
        if unknown:
            notes.append(unknown_note(f"{label}.selectors" + (f"[{i}]" if isinstance(raw, list) else ""), unknown,
                                      INCUMBENT))
        decoded.append(values)
    if problem:
        notes.append(f"{label} is skipped: unable to get SelectorObj from selectors: {problem} (the SR-IOV plugin "
                     "skips it too)")
        return None
    return decoded


def _selectors(chosen: dict[str, Any], at: str, label: str, notes: list[str]) -> Selectors:
    for key, what in NARROWING.items():
        if chosen.get(key):
            raise ValueError(f"{at}.{key}: selecting by {what} is not supported by this driver; ignoring it would "
                             "widen the pool, so remove it or keep this entry with the SR-IOV plugin")
    if chosen.get("vdpaType"):
        raise ValueError(f"{at}: invalid config: VdpaType and IsRdma are mutually exclusive options")
    if chosen.get("needVhostNet"):
        notes.append(f"{label}: needVhostNet is accepted and not applied: no /dev/vhost-net is handed out here")
    notes.extend(inexact_notes({key: chosen.get(key) for key in ("vendors", "devices", "pciAddresses", "linkTypes",
                                                                  "drivers", "pfNames", "rootDevices")},
                               f"{label}: {at.split('.', 1)[1]}", INCUMBENT))
    try:
        return Selectors(
            vendors=chosen.get("vendors") or None, device_ids=chosen.get("devices") or None,
            drivers=chosen.get("drivers") or None, pci_addresses=chosen.get("pciAddresses") or None,
            pf_names=chosen.get("pfNames") or None, root_devices=chosen.get("rootDevices") or None,
            link_types=chosen.get("linkTypes") or None, pfs_with_vfs=False)  # the plugin never takes such PFs
    except ValueError as exc:
        text = str(exc)
        for ours, theirs in _RENAMES.items():
            text = theirs + text[len(ours):] if text.startswith(ours) else text
        raise ValueError(f"{at}: {text}") from None
