"""``multidp dra classes``: a DeviceClass for each resource of each driver served through DRA.

Each driver whose section says ``frontend: dra`` is created and scanned once, as ``multidp devices``
does; every resource it finds becomes one DeviceClass (``resource.k8s.io/v1``) that selects that
resource's devices by the attribute the host publishes on each (``multidp.io/resource``: CEL cannot
see pool names), and names the resource as its ``extendedResourceName`` (KEP-5004), so that pods asking
for the extended resource keep working. A driver the config disables is scanned too: a class is for
the whole cluster, while node labels decide where the driver runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

import msgspec
import yaml

from multidp.cli import commands
from multidp.cli.exits import EXIT_DRIVER_FAILED, EXIT_OK, UsageError
from multidp.config.settings import Settings
from multidp.dra.attributes import RESOURCE_ATTRIBUTE, resource_value
from multidp.names import DNS1123_SUBDOMAIN
from multidp.plugins.factory import FAILED, DriverFactory, UnknownDrivers, describe_failure, selected_names
from multidp.plugins.registry import PluginRegistry

API_VERSION = "resource.k8s.io/v1"
MAX_NAME = 253  # a DeviceClass's name is a DNS subdomain
_NOT_IN_LABEL = re.compile(r"[^a-z0-9.]+")


def class_name(resource: str) -> str:
    """The DeviceClass name of ``resource``: ``<name>.<prefix>`` (``nvidia.com/gpu`` → ``gpu.nvidia.com``).

    When that is no DNS subdomain (upper case, '_', or over 253 characters), the name part is
    lower-cased, every other character made '-', and 8 hex digits of the resource's SHA-256 appended
    (``rdma/hca_a`` → ``hca-a-<hash>.rdma``), so that the name depends on the resource alone.
    """
    prefix, _, short = resource.partition("/")
    plain = f"{short}.{prefix}"
    if len(plain) <= MAX_NAME and DNS1123_SUBDOMAIN.fullmatch(plain):
        return plain
    digest = hashlib.sha256(resource.encode()).hexdigest()[:8]
    labels = (label.strip("-") for label in _NOT_IN_LABEL.sub("-", short.lower()).split("."))
    stem = ".".join(label for label in labels if label)
    stem = f"{stem}-{digest}" if stem else digest
    while len(f"{stem}.{prefix}") > MAX_NAME and "." in prefix:  # the prefix's leftmost labels go first
        prefix = prefix.partition(".")[2]
    name = f"{stem}.{prefix}"
    return name if len(name) <= MAX_NAME else stem


def selector(dra_name: str, resource: str) -> str:
    """The CEL expression that picks ``resource``'s devices of DRA driver ``dra_name`` (by the value the host
    publishes in ``multidp.io/resource``: the name, or its short hashed form past 64 bytes)."""
    domain, _, attribute = RESOURCE_ATTRIBUTE.partition("/")
    # JSON's string escapes are CEL's too; the names are plain ASCII anyway.
    return (f"device.driver == {json.dumps(dra_name)} && "
            f"device.attributes[{json.dumps(domain)}].{attribute} == {json.dumps(resource_value(resource))}")


def device_class(driver: str, dra_name: str, resource: str) -> dict[str, Any]:
    """The DeviceClass for ``resource``, served by ``driver`` under the DRA name ``dra_name``."""
    return {
        "apiVersion": API_VERSION,
        "kind": "DeviceClass",
        "metadata": {
            "name": class_name(resource),
            "labels": {"app.kubernetes.io/part-of": "multidp", "multidp.io/driver": driver},
        },
        "spec": {
            "selectors": [{"cel": {"expression": selector(dra_name, resource)}}],
            "extendedResourceName": resource,
        },
    }


class Classes(msgspec.Struct):
    """What the command prints, and what it could not print (each a line naming the driver and why)."""

    classes: list[dict[str, Any]] = msgspec.field(default_factory=list)
    problems: list[str] = msgspec.field(default_factory=list)
    notes: list[str] = msgspec.field(default_factory=list)  # nothing wrong, but the reader may wonder


def dra_drivers(settings: Settings, registry: PluginRegistry, environ: Mapping[str, str],
                found: Classes) -> dict[str, str]:
    """The selected drivers whose section (without node labels) says ``frontend: dra``: name → DRA name."""
    try:
        names = selected_names(settings, registry)
    except UnknownDrivers as exc:
        raise UsageError(str(exc)) from None
    factory = DriverFactory(settings, registry, environ)
    chosen: dict[str, str] = {}
    for name in names:
        try:
            resolved = factory.resolve(name)
        except Exception as exc:  # noqa: BLE001 - a bad section: whether it is in DRA mode is unknown
            found.problems.append(f"driver {name}: {describe_failure(exc)}")
            continue
        if resolved.frontend == "dra":
            chosen[name] = resolved.dra_name
    return chosen


def collect(settings: Settings, registry: PluginRegistry, environ: Mapping[str, str]) -> Classes:
    """Create and scan each driver in DRA mode once; one class per resource it serves."""
    found = Classes()
    chosen = dra_drivers(settings, registry, environ, found)
    if not chosen:
        found.notes.append("no driver is configured with frontend: dra (drivers.<name>.frontend), so no DeviceClass")
        return found
    # Disabled drivers too: whether a driver runs is decided node by node, a class is cluster-wide.
    sections = {**settings.driver_sections, **{n: {**settings.section(n), "enabled": True} for n in chosen}}
    scanned = msgspec.structs.replace(settings, drivers=list(chosen), driver_sections=sections)
    report = commands.scan_all(scanned, registry)
    names: dict[str, str] = {}  # class name -> the resource that has it
    for entry in report:
        driver = entry["driver"]
        if entry["state"] != "ok":
            what = found.problems if entry["state"] == FAILED else found.notes
            what.append(f"driver {driver}: {entry['state']}: {entry['reason']}; no DeviceClass for it")
            continue
        if not entry["resources"]:
            found.notes.append(f"driver {driver}: found no resources here, so no DeviceClass (run this where its "
                               "hardware is, or with --simulate)")
        for resource in entry["resources"]:
            problem = _problem(resource, entry["not_served"].get(resource), names)
            if problem:
                found.problems.append(f"driver {driver}: resource {resource}: {problem}; no DeviceClass for it")
                continue
            names[class_name(resource)] = resource
            found.classes.append(device_class(driver, chosen[driver], resource))
    return found


def _problem(resource: str, not_served: str | None, names: Mapping[str, str]) -> str:
    """Why ``resource`` gets no class ("" when it gets one)."""
    if not_served:
        return f"not served: {not_served}"
    taken = names.get(class_name(resource))
    if taken is not None:
        return f"its class name {class_name(resource)} is {taken}'s already"
    return ""


def print_classes(settings: Settings, as_json: bool, environ: Mapping[str, str] | None = None) -> int:
    """Print the classes (YAML documents, or a JSON list); exit 1 when a driver or resource got none for a
    reason that is wrong (each said on stderr), else 0."""
    found = collect(settings, PluginRegistry(), os.environ if environ is None else environ)
    for line in found.notes:
        print(f"multidp: {line}", file=sys.stderr)
    for line in found.problems:
        print(f"multidp: {line}", file=sys.stderr)
    if as_json:
        print(json.dumps(found.classes, indent=2))
    elif found.classes:
        print(yaml.safe_dump_all(found.classes, sort_keys=False, width=4096), end="")  # one line per CEL expression
    return EXIT_DRIVER_FAILED if found.problems else EXIT_OK
