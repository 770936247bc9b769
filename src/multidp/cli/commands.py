"""The one-shot commands: ``multidp devices``, ``drivers`` and ``config``.

Driver code (imports, hooks, scan, close) runs on helper threads (``with_deadline`` and the
factory), so a driver that raises SystemExit or KeyboardInterrupt is reported failed in the
output instead of ending the command; the user's own Ctrl-C still ends it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from multidp.cli.exits import EXIT_DRIVER_FAILED, EXIT_OK, EXIT_USAGE, EXIT_WARNINGS, UsageError
from multidp.config.bylabel import with_host_keys
from multidp.config.sections import section_variants
from multidp.config.settings import DEFAULTS, FileConfig, Settings
from multidp.driver import Driver
from multidp.errors import PluginLoadError
from multidp.model import Device
from multidp.names import resource_name_problem
from multidp.plugins.calls import with_deadline
from multidp.plugins.factory import (
    CHECKING_SINCE,
    DISABLED,
    FAILED,
    NOT_SELECTED,
    DriverFactory,
    UnknownDrivers,
    describe_failure,
    selected_names,
)
from multidp.plugins.registry import PluginRegistry
from multidp.plugins.runner import CLOSE_TIMEOUT_S
from multidp.serving.cdi import SpecRefused, checked_documents, unwritable
from multidp.serving.devicecheck import as_list, left_out
from multidp.serving.resource import cdi_marked


def _selected(settings: Settings, registry: PluginRegistry) -> list[str]:
    try:
        return selected_names(settings, registry)
    except UnknownDrivers as exc:
        raise UsageError(str(exc)) from None


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


def scan_all(settings: Settings, registry: PluginRegistry) -> list[dict[str, Any]]:
    """Create each selected, enabled driver, scan it once, close it."""
    factory = DriverFactory(settings, registry)
    report: list[dict[str, Any]] = []
    try:
        for name in _selected(settings, registry):
            entry: dict[str, Any] = {"driver": name, "state": "ok", "reason": "", "resources": {}, "not_served": {}}
            report.append(entry)
            try:
                if not factory.enabled(name):
                    entry.update(state=DISABLED, reason="disabled in config")
                    continue
                driver = factory.create(name)
                try:
                    inventory = with_deadline(f"driver {name}: scan", settings.timeouts.scan, driver.scan)
                    problem = _cdi_problem(settings, name, driver)
                    if problem is not None and isinstance(inventory, Mapping):  # as the daemon marks them
                        marked: dict[str, Any] = {r: d if (items := as_list(d)) is None else cdi_marked(items, problem)
                                                  for r, d in inventory.items()}
                        inventory = marked
                except Exception:
                    with contextlib.suppress(Exception):  # the scan's failure is the one to report
                        _close(name, driver)
                    raise
                _close(name, driver)
            except Exception as exc:  # noqa: BLE001 - reported per driver
                entry.update(state=FAILED, reason=describe_failure(exc))
                continue
            entry["resources"], entry["not_served"] = _as_served(inventory)
    finally:
        factory.cleanup()
    return report


def _cdi_problem(settings: Settings, name: str, driver: Driver) -> str | None:
    """Why the daemon could not write ``driver``'s CDI specs now (nothing is written here), or None."""
    try:
        specs = with_deadline(f"driver {name}: CDI specs", settings.timeouts.scan, driver.cdi_specs)
        documents = checked_documents(name, list(specs or ()))
    except SpecRefused as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - the driver's failure is the reason
        return f"driver {name}: CDI specs failed: {describe_failure(exc)}"
    return unwritable(settings.cdi_dir) if documents else None


def _as_served(inventory: Mapping[str, Sequence[Device]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The scan as plain data, each device or resource the node would not serve marked with why
    (the daemon's own checks: the kubelet's name rules, the device checks, the 4 MiB list)."""
    resources: dict[str, Any] = {}
    not_served: dict[str, str] = {}
    for resource, devices in sorted(inventory.items(), key=lambda item: str(item[0])):
        name_problem = resource_name_problem(resource) if isinstance(resource, str) else "its name is not a string"
        problems, whole = left_out(devices)
        if name_problem or whole:
            not_served[str(resource)] = (f"it is not an extended resource name: {name_problem}" if name_problem
                                         else f"its list would be refused: {whole}")
        why = {id(device): problem for device, problem in problems}
        resources[str(resource)] = [
            {
                "id": getattr(d, "id", None),
                "health": getattr(getattr(d, "health", None), "value", str(getattr(d, "health", ""))),
                "numa_nodes": list(getattr(d, "numa_nodes", ()) or ()),
                "replicas": getattr(d, "replicas", None),
                "reason": getattr(d, "reason", ""),
                "info": {str(k): str(v) for k, v in dict(getattr(d, "info", {}) or {}).items()},
                **({"not_served": why[id(d)]} if id(d) in why else {}),
            }
            for d in (as_list(devices) or [])
        ]
    return resources, not_served


def _close(name: str, driver: Driver) -> None:
    with_deadline(f"driver {name}: close", CLOSE_TIMEOUT_S, driver.close)


def list_devices(settings: Settings, as_json: bool) -> int:
    """Exit 1 when a driver failed or found something the node would not serve (each says why)."""
    from multidp.cli import dradevices  # the DRA package: only this command of the one-shot ones needs it

    report = scan_all(settings, PluginRegistry())
    dradevices.annotate(settings, report, dict(os.environ))
    troubled = any(e["state"] == FAILED or e["not_served"] or any(
        "not_served" in d for devices in e["resources"].values() for d in devices) for e in report)
    code = EXIT_DRIVER_FAILED if troubled else EXIT_OK
    if as_json:
        print(json.dumps({"drivers": report}, indent=2))
        return code
    rows = []
    for entry in report:
        if entry["state"] != "ok":
            rows.append([entry["driver"], "-", "-", entry["state"], "-", "-", entry["reason"]])
        for resource, devices in entry["resources"].items():
            refused = entry["not_served"].get(resource)
            for d in devices:
                problem = refused or d.get("not_served")
                details = (f"NOT SERVED: {problem}" if problem else
                           d["reason"] or ", ".join(f"{k}={v}" for k, v in d["info"].items()))
                details = "; ".join(filter(None, [details, dradevices.details(d)]))
                numa = ",".join(map(str, d["numa_nodes"])) or "-"
                rows.append([entry["driver"], resource, str(d["id"]), d["health"], numa, str(d["replicas"] or "-"),
                             details])
            if refused and not devices:
                rows.append([entry["driver"], resource, "-", "-", "-", "-", f"NOT SERVED: {refused}"])
    if not rows:
        print("no drivers installed" if not report else "no devices found")
        return code
    print(_table(rows, ["DRIVER", "RESOURCE", "DEVICE", "HEALTH", "NUMA", "REPLICAS", "DETAILS"]))
    return code


def driver_report(settings: Settings, registry: PluginRegistry,
                  files: Mapping[str, Path] | None = None) -> list[dict[str, Any]]:
    """Every installed driver: origin, selected, enabled, loaded, config valid.

    A selected driver's config is checked as every node can see it (alone, and with each
    per-node config), each time by creating the driver in checking mode, as the node would
    create it, and closing it: so the files its config names are read and checked too.
    """
    factory = DriverFactory(settings, registry)
    factory.files = files or {}
    selected = set(_selected(settings, registry))
    report = []
    for name in registry.names:
        info = registry.plugins[name]
        entry: dict[str, Any] = {"name": name, "distribution": info.distribution, "version": info.version,
                                 "entry_point": info.entry_point, "status": "ok", "reason": "", "warnings": []}
        report.append(entry)
        if name not in selected:
            entry.update(status=NOT_SELECTED, reason="not in --drivers")
            continue
        try:
            factory.load(name)
        except PluginLoadError as exc:
            entry.update(status=FAILED, reason=str(exc))
            # The section is still checked against the host's own keys, as far as it can be.
            with contextlib.suppress(Exception):
                if not factory.resolve(name).enabled:
                    entry.update(status=DISABLED, reason="disabled in config")
            continue
        try:
            variants = section_variants(name, settings.section(name), factory.environ,
                                        factory.config_type(name), factory.source)
        except Exception as exc:  # noqa: BLE001 - a bad section, or a config type hook that failed
            entry.update(status=FAILED, reason=describe_failure(exc))
            continue
        # Every variant, enabled or not: a node label (multidp.io/<driver>=true) may run a disabled one.
        for variant in variants:
            checked = factory.check(name, variant.config)
            where = "" if variant.chosen is None else f" ({variant.where()})"
            entry["warnings"] += [f"{w}{where}" for w in checked.warnings]
            if checked.error is not None:
                note = "" if variant.enabled else f"; disabled in config, but multidp.io/{name}=true would run it"
                entry.update(status=FAILED, reason=f"{describe_failure(checked.error)}{where}{note}")
                break
            if not checked.created:
                declared = ".".join(map(str, factory.info(name).api_version))
                entry["reason"] = (f"section validated; not created to check it (it declares driver API {declared}, "
                                   f"before checking mode came in {'.'.join(map(str, CHECKING_SINCE))})")
                break
        else:
            if not any(v.enabled for v in variants):
                entry.update(status=DISABLED, reason="disabled in config (its config was checked: a node label "
                                                     f"multidp.io/{name}=true may run it)")
    return report


def list_drivers(settings: Settings, as_json: bool) -> int:
    report = driver_report(settings, PluginRegistry())
    if as_json:
        print(json.dumps({"drivers": report}, indent=2))
        return EXIT_OK
    if not report:
        print("no drivers installed (drivers are packages with entry points in the group 'multidp')")
        return EXIT_OK
    rows = [[e["name"], f'{e["distribution"]} {e["version"]}'.strip(), e["status"],
             e["reason"] or "; ".join(f"warning: {w}" for w in e["warnings"])] for e in report]
    print(_table(rows, ["DRIVER", "DISTRIBUTION", "STATUS", "REASON"]))
    return EXIT_OK


def config_schema(settings: Settings) -> int:
    """The config file's JSON schema, with every loadable driver's section."""
    registry = PluginRegistry()
    factory = DriverFactory(settings, registry)
    schema = msgspec.json.schema(FileConfig)
    defs = schema["$defs"]
    drivers: dict[str, Any] = {}
    for name in registry.names:
        try:
            factory.load(name)
            config_type = factory.config_type(name)
        except Exception as exc:  # noqa: BLE001 - that driver is left out, and the user told why
            print(f"multidp: driver {name} left out of the schema: {describe_failure(exc)}", file=sys.stderr)
            continue
        if config_type is None:
            drivers[name] = with_host_keys({"type": "object"}, defs)
            continue
        # Each driver's definitions join the root's, prefixed, so every $ref resolves.
        section = json.loads(json.dumps(msgspec.json.schema(config_type)).replace('"#/$defs/', f'"#/$defs/{name}.'))
        defs.update({f"{name}.{key}": value for key, value in section.pop("$defs", {}).items()})
        drivers[name] = {**with_host_keys(section, defs),
                         "description": f"settings of the {name} driver; enabled and configByLabel are the host's"}
    drivers[DEFAULTS] = {"type": "object", "additionalProperties": False,
                         "properties": {"enabled": {"type": "boolean"}},
                         "description": "enabled: whether drivers the config does not enable or disable run"}
    defs["FileConfig"]["properties"]["drivers"] = {"type": "object", "properties": drivers}
    print(json.dumps(schema, indent=2))
    return EXIT_OK


def parse_file_maps(pairs: Sequence[str]) -> dict[str, Path]:
    """``--file POD_PATH=LOCAL_PATH`` flags: where to read files that exist only inside the pod."""
    files: dict[str, Path] = {}
    for pair in pairs:
        inside, sep, local = pair.partition("=")
        if not sep or not inside.startswith("/") or not local:
            raise UsageError(f"--file {pair!r}: write POD_PATH=LOCAL_PATH, POD_PATH absolute "
                             "(e.g. /available-configs=deploy/overlays/gpu-node-configs/nvidia-configs)")
        if not Path(local).exists():
            raise UsageError(f"--file {pair!r}: {local} does not exist here")
        files[inside.rstrip("/") or "/"] = Path(local)
    return files


def config_check(settings: Settings, files: Mapping[str, Path] | None = None) -> int:
    """Exit 2 when a driver would fail with this config on some node, 1 when one would only warn
    (an incumbent's key it ignores, as the incumbent does), 0 when neither."""
    report = driver_report(settings, PluginRegistry(), files)
    problems = [e for e in report if e["status"] == FAILED]
    for entry in report:
        for warning in entry["warnings"]:
            print(f"multidp: driver {entry['name']}: warning: {warning}", file=sys.stderr)
    for entry in problems:
        print(f"multidp: driver {entry['name']}: {entry['reason']}", file=sys.stderr)
    warned = sum(len(e["warnings"]) for e in report)
    where = f" ({settings.config_path})" if settings.config_path else " (defaults)"
    if problems:
        print(f"multidp: config check failed: {len(problems)} driver(s) would fail", file=sys.stderr)
        return EXIT_USAGE
    if warned:
        print(f"config valid{where}, with {warned} warning(s): each is something a node would run without")
        return EXIT_WARNINGS
    print(f"config OK{where}")
    return EXIT_OK
