"""``multidp devices`` for drivers served through DRA: each device's DRA name and the claim holding it.

The claims come from the driver's checkpoint on this node (``<dra-plugins-dir>/<DRA driver>/checkpoint.json``),
read only; a checkpoint that cannot be trusted is reported as it would stop Prepare on the node.
"""

from __future__ import annotations

import logging
from typing import Any

from multidp.config.settings import Settings
from multidp.dra.checkpoint import Checkpoint, CheckpointCorrupt
from multidp.dra.frontend import node_name
from multidp.dra.names import device_name, pool_name
from multidp.plugins.factory import DriverFactory
from multidp.plugins.registry import PluginRegistry

log = logging.getLogger(__name__)


def annotate(settings: Settings, report: list[dict[str, Any]], environ: dict[str, str]) -> None:
    """Add the DRA view to the entries of drivers whose section says ``frontend: dra``."""
    factory = DriverFactory(settings, PluginRegistry(), environ)
    node = node_name(environ)
    for entry in report:
        try:
            resolved = factory.resolve(entry["driver"])
        except Exception:  # noqa: BLE001 - a bad section is already reported by the scan
            continue
        if resolved.frontend != "dra":
            entry["frontend"] = "device-plugin"
            continue
        entry.update(frontend="dra", dra_driver=resolved.dra_name, claims_problem="")
        holders: dict[tuple[str, str], str] = {}
        try:
            contents = Checkpoint(settings.dra_plugins_dir / resolved.dra_name / "checkpoint.json").load()
        except CheckpointCorrupt as exc:
            entry["claims_problem"] = str(exc)
        else:
            for claim in contents.claims.values():
                for device in claim.devices:
                    holders[(device.pool, device.device)] = f"{claim.namespace}/{claim.name} ({claim.state})"
        for resource, devices in entry["resources"].items():
            pool = pool_name(node, resource)
            for device in devices:
                name = device_name(str(device["id"]))
                device["dra"] = {"pool": pool, "device": name, "claim": holders.get((pool, name))}


def details(device: dict[str, Any]) -> str:
    """The DRA part of a device's DETAILS column ("" for a device-plugin device)."""
    dra = device.get("dra")
    if not dra:
        return ""
    held = f", claim {dra['claim']}" if dra["claim"] else ", no claim"
    return f"DRA {dra['pool']}/{dra['device']}{held}"
