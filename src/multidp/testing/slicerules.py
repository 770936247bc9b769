"""The checks the fake API server makes of a ResourceSlice write, as the real server validates one.

:func:`problems` names each field that breaks a limit or a format of ``resource.k8s.io/v1`` (at most 128
devices per slice, 64 once any has taints; 32 attributes and capacities per device; names, values,
taints, pool), then, when kubernetes-validate is installed (the ``testing`` extra), the 1.34 strict JSON
schema. Each problem is a (field path, message) pair, as a Status's causes.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

MAX_DEVICES, MAX_TAINTED, MAX_ATTRIBUTES, MAX_VALUE_BYTES = 128, 64, 32, 64
TAINT_EFFECTS = ("NoSchedule", "NoExecute")

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
_QUALIFIED = re.compile(rf"((?=[^/]{{1,63}}/){_SUBDOMAIN}/)?[A-Za-z_][A-Za-z0-9_]{{0,31}}")
_TAINT_KEY = re.compile(rf"((?=[^/]{{1,253}}/){_SUBDOMAIN}/)?(?=.{{1,63}}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"((?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?")

try:
    SCHEMA: Any = importlib.import_module("kubernetes_validate")
except ImportError:  # the `testing` extra not installed: the store's own checks only
    SCHEMA = None


Causes = list[tuple[str, str]]  # (field path, what is wrong), as a Status's causes


def _name_problems(at: str, name: Any, what: str, limit: int, pattern: str) -> Causes:
    if not isinstance(name, str) or not name:
        return [(at, "Required value")]
    if len(name) > limit or not re.fullmatch(pattern, name):
        return [(at, f"Invalid value: {name!r}: must be {what} of at most {limit} characters")]
    return []


def _value_problems(at: str, value: Any, capacity: bool) -> Causes:
    if capacity:
        quantity = value.get("value") if isinstance(value, dict) else None
        if isinstance(quantity, int) and not isinstance(quantity, bool) or \
                isinstance(quantity, str) and _QUANTITY.fullmatch(quantity):
            return []
        return [(f"{at}.value", f"Invalid value: {quantity!r}: not a quantity")]
    kinds = [kind for kind in ("int", "bool", "string", "version") if kind in value] if isinstance(value, dict) else []
    if len(kinds) != 1:
        return [(at, "Invalid value: exactly one of int, bool, string and version must be set")]
    text = str(value[kinds[0]])
    if kinds[0] in ("string", "version") and len(text.encode()) > MAX_VALUE_BYTES:
        return [(f"{at}.{kinds[0]}", f"Too long: may not be more than {MAX_VALUE_BYTES} bytes")]
    if kinds[0] == "version" and not _SEMVER.fullmatch(text):
        return [(f"{at}.version", f"Invalid value: {text!r}: must be a semantic version")]
    return []


def _device_problems(at: str, device: Any, seen: set[str]) -> Causes:
    if not isinstance(device, dict):
        return [(at, "Invalid value: a device must be an object")]
    found = _name_problems(f"{at}.name", device.get("name"), "a DNS label", 63, _LABEL)
    if not found and device["name"] in seen:
        found.append((f"{at}.name", f"Duplicate value: {device['name']!r}"))
    seen.add(str(device.get("name")))
    listed = [(kind, device.get(kind) or {}) for kind in ("attributes", "capacity")]
    if any(not isinstance(entries, dict) for _, entries in listed):
        return [*found, (at, "Invalid value: attributes and capacity must be maps")]
    if sum(len(entries) for _, entries in listed) > MAX_ATTRIBUTES:
        found.append((at, f"Too many: must have at most {MAX_ATTRIBUTES} attributes and capacities combined"))
    for kind, entries in listed:
        for key, value in entries.items():
            if not _QUALIFIED.fullmatch(key):
                found.append((f"{at}.{kind}[{key}]", "Invalid value: a name must be a C identifier of at most 32 "
                              "characters, optionally after a DNS subdomain of at most 63 and '/'"))
            found += _value_problems(f"{at}.{kind}[{key}]", value, kind == "capacity")
    for index, taint in enumerate(device.get("taints") or []):
        where, taint = f"{at}.taints[{index}]", taint if isinstance(taint, dict) else {}
        if not _TAINT_KEY.fullmatch(str(taint.get("key", ""))):
            found.append((f"{where}.key", f"Invalid value: {taint.get('key')!r}: not a qualified name"))
        if not _LABEL_VALUE.fullmatch(str(taint.get("value", ""))):
            found.append((f"{where}.value", f"Invalid value: {taint.get('value')!r}: not a label value"))
        if taint.get("effect") not in TAINT_EFFECTS:
            found.append((f"{where}.effect", f"Unsupported value: {taint.get('effect')!r}: supported values: "
                          + ", ".join(TAINT_EFFECTS)))
    return found


def problems(obj: Mapping[str, Any]) -> Causes:
    """What the API server's validation refuses in the ResourceSlice ``obj`` (its limits and formats)."""
    found = _name_problems("metadata.name", obj["metadata"].get("name"), "a DNS subdomain", 253, _SUBDOMAIN)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [*found, ("spec", "Required value")]
    found += _name_problems("spec.driver", spec.get("driver"), "a DNS subdomain", 63, _SUBDOMAIN)
    pool = spec.get("pool")
    if not isinstance(pool, dict):
        found.append(("spec.pool", "Required value"))
    else:
        found += _name_problems("spec.pool.name", pool.get("name"), "DNS subdomains joined by '/'", 253,
                                rf"{_SUBDOMAIN}(/{_SUBDOMAIN})*")
        for field, least in (("generation", 0), ("resourceSliceCount", 1)):
            if not isinstance(pool.get(field), int) or pool[field] < least:
                found.append((f"spec.pool.{field}", f"Invalid value: {pool.get(field)!r}: must be >= {least}"))
    if sum(bool(spec.get(key)) for key in ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection")) != 1:
        found.append(("spec", "Invalid value: exactly one of nodeName, nodeSelector, allNodes and "
                      "perDeviceNodeSelection must be set"))
    devices = spec.get("devices") or []
    if not isinstance(devices, list):
        return [*found, ("spec.devices", "Invalid value: must be a list")]
    limit = MAX_TAINTED if any(isinstance(d, dict) and d.get("taints") for d in devices) else MAX_DEVICES
    if len(devices) > limit:
        found.append(("spec.devices", f"Too many: {len(devices)}: must have at most {limit} items"
                      + (" when a device has taints" if limit == MAX_TAINTED else "")))
    seen: set[str] = set()
    for index, device in enumerate(devices):
        found += _device_problems(f"spec.devices[{index}]", device, seen)
    return found
