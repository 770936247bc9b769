"""DRA's rules for a device's attributes and capacity (resource.k8s.io/v1), for drivers' tests.

A driver's tests check every device its scans return with :func:`attribute_problems`; the host leaves
out what breaks these rules when it publishes ResourceSlices (:mod:`multidp.dra.attributes`).

Names: a C identifier of at most 32 characters, or ``<DNS subdomain of at most 63>/<C identifier>``.
Values: bool, int (64 bits), str or SemVer (strings and versions at most 64 bytes, versions semver 2.0.0);
capacities: non-negative ints or Kubernetes quantities. At most 32 attributes and capacities per device,
two of which the host adds (``multidp.io/resource`` and ``resource.kubernetes.io/numaNode``).
"""

from __future__ import annotations

from collections.abc import Iterable

from multidp import Device, SemVer
from multidp.dra.attributes import MAX_ATTRIBUTES, MAX_VALUE_BYTES, NAME, QUANTITY, SEMVER

HOST_ADDS = 2  # multidp.io/resource and resource.kubernetes.io/numaNode
MAX_ENTRIES = MAX_ATTRIBUTES


def problems(device: Device) -> list[str]:
    """Every way ``device``'s attributes and capacity break DRA's rules (none: [])."""
    found = []
    entries = len(device.attributes) + len(device.capacity)
    if entries + HOST_ADDS > MAX_ENTRIES:
        found.append(f"{device.id}: {entries} attributes and capacities, over {MAX_ENTRIES - HOST_ADDS}")
    for name, value in device.attributes.items():
        where = f"{device.id}: attribute {name!r}"
        if not NAME.fullmatch(name):
            found.append(f"{where}: not a qualified name")
        if isinstance(value, SemVer):
            if not SEMVER.fullmatch(value.value) or len(value.value.encode()) > MAX_VALUE_BYTES:
                found.append(f"{where}: {value.value!r} is not a semantic version of at most 64 bytes")
        elif isinstance(value, str):
            if not value or len(value.encode()) > MAX_VALUE_BYTES:
                found.append(f"{where}: a string must have 1 to {MAX_VALUE_BYTES} bytes: {value!r}")
        elif isinstance(value, int):  # bool included
            if not -(2**63) <= value < 2**63:
                found.append(f"{where}: {value} is beyond 64 bits")
        else:
            found.append(f"{where}: a {type(value).__name__}, not a bool, int, str or SemVer")
    for name, quantity in device.capacity.items():
        where = f"{device.id}: capacity {name!r}"
        if not NAME.fullmatch(name) or name in device.attributes:
            found.append(f"{where}: not a qualified name, or also an attribute")
        quantity_ok = (isinstance(quantity, int) and quantity >= 0
                       or isinstance(quantity, str) and bool(QUANTITY.fullmatch(quantity)) and quantity[:1] != "-")
        if isinstance(quantity, bool) or not quantity_ok:
            found.append(f"{where}: {quantity!r} is not a quantity")
    return found


def attribute_problems(devices: Iterable[Device]) -> list[str]:
    """The problems of every device in ``devices``."""
    return [problem for device in devices for problem in problems(device)]
