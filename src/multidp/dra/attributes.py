"""A device as a ResourceSlice lists it: its DRA name, attributes, capacity and health taint.

The driver's attributes and capacities are checked against the API's rules before they are sent, so
that one bad name never costs a whole slice (the API server would refuse it): what breaks a rule is
left out and reported, naming the device and the attribute. The host adds ``multidp.io/resource`` (the
extended resource name: DeviceClasses select on it, as CEL cannot see pool names) and
``resource.kubernetes.io/numaNode`` when the device is on exactly one NUMA node. An unhealthy device
carries the taint ``multidp.io/unhealthy`` (NoSchedule) with its reason in label-value form.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from multidp.model import Device, SemVer

MAX_ATTRIBUTES = 32  # attributes and capacities together, per device
MAX_VALUE_BYTES = 64
HOST_DOMAIN = "multidp.io"
RESOURCE_ATTRIBUTE = f"{HOST_DOMAIN}/resource"
NUMA_ATTRIBUTE = "resource.kubernetes.io/numaNode"
TAINT_KEY = f"{HOST_DOMAIN}/unhealthy"

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]{0,31}"
_DOMAIN = r"(?=.{1,63}/)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
NAME = re.compile(rf"({_DOMAIN}/)?{_IDENTIFIER}")
SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?")
_NOT_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]+")


class Listed(msgspec.Struct):
    """One device in API form, and what of the driver's description was left out (and why)."""

    entry: dict[str, Any]
    left_out: list[str] = msgspec.field(default_factory=list)


def _attribute(value: object) -> tuple[dict[str, Any] | None, str]:
    if isinstance(value, bool):
        return {"bool": value}, ""
    if isinstance(value, int):
        return ({"int": value}, "") if -(2**63) <= value < 2**63 else (None, "an int beyond 64 bits")
    if isinstance(value, SemVer):
        ok = isinstance(value.value, str) and len(value.value.encode()) <= MAX_VALUE_BYTES and SEMVER.fullmatch(
            value.value)
        return ({"version": value.value}, "") if ok else (None, f"{value.value!r} is not a semantic version")
    if isinstance(value, str):
        if len(value.encode()) > MAX_VALUE_BYTES:
            return None, f"a string over {MAX_VALUE_BYTES} bytes"
        return {"string": value}, ""
    return None, f"a {type(value).__name__}, not a bool, int, str or SemVer"


def _capacity(value: object) -> tuple[dict[str, Any] | None, str]:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"value": str(value)}, ""
    if isinstance(value, str) and QUANTITY.fullmatch(value):
        return {"value": value}, ""
    return None, f"{value!r} is not a Kubernetes quantity"


def resource_value(resource: str) -> str:
    """``multidp.io/resource`` for ``resource``: the name itself, or, past the 64 bytes a string attribute may
    hold (Intel's FPGA resource names are longer), its first 55 characters, '~' and 8 hex digits of its SHA-256
    (DeviceClasses select on the same value: ``multidp dra classes``)."""
    if len(resource.encode()) <= MAX_VALUE_BYTES:
        return resource
    return resource[:55] + "~" + hashlib.sha256(resource.encode()).hexdigest()[:8]


def label_value(text: str) -> str:
    """``text`` as a label value (a taint's value): at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends."""
    return _NOT_LABEL_VALUE.sub("-", text)[:63].strip("-_.")


def listed(name: str, device: Device, resource: str, taint: bool) -> Listed:
    """``device`` under ``name`` as a ResourceSlice device; with ``taint``, tainted with its reason."""
    attributes: dict[str, Any] = {RESOURCE_ATTRIBUTE: {"string": resource_value(resource)}}
    if len(device.numa_nodes) == 1:
        attributes[NUMA_ATTRIBUTE] = {"int": device.numa_nodes[0]}
    capacity: dict[str, Any] = {}
    problems: list[str] = []
    for kind, given, into, convert in (("attribute", device.attributes, attributes, _attribute),
                                       ("capacity", device.capacity, capacity, _capacity)):
        for key, value in (given.items() if isinstance(given, Mapping) else ()):
            if not isinstance(key, str) or not NAME.fullmatch(key):
                problems.append(f"{kind} {key!r}: not a C identifier (at most 32 characters), optionally after "
                                "a DNS subdomain and '/'")
                continue
            if key in attributes or key in capacity:
                problems.append(f"{kind} {key!r}: given twice (or a name the host sets)")
                continue
            if len(attributes) + len(capacity) >= MAX_ATTRIBUTES:
                problems.append(f"{kind} {key!r}: over {MAX_ATTRIBUTES} attributes and capacities")
                continue
            converted, why = convert(value)
            if converted is None:
                problems.append(f"{kind} {key!r}: {why}")
                continue
            into[key] = converted
    entry: dict[str, Any] = {"name": name, "attributes": attributes}
    if capacity:
        entry["capacity"] = capacity
    if taint:
        entry["taints"] = [{"key": TAINT_KEY, "value": label_value(device.reason or "unhealthy"),
                            "effect": "NoSchedule"}]
    return Listed(entry, problems)
