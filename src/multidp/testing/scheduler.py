"""A scheduler stand-in for tests: allocates claims from the ResourceSlices in the fake API server.

:class:`SchedulerStandIn` does the part of DRA's allocator that a driver's publishing decides: it reads the
slices of one driver, uses only the newest generation of each pool and only once that generation is
complete (all ``resourceSliceCount`` slices present), leaves out devices with a NoSchedule or NoExecute
taint the claim does not tolerate and devices another claim holds, and writes the allocated claim
into ``api.claims`` for the kubelet stand-in to prepare.

It does not check what a driver's publishing does not decide: CEL selectors, device classes, capacity
(and consumable capacity), admin access, constraints between devices (matchAttribute), shared counters
(partitionable devices), prioritized alternatives, binding conditions, or pools published for a
nodeSelector or all nodes. Devices are taken in order of pool name, then as the slices list them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from multidp.dra.attributes import RESOURCE_ATTRIBUTE, resource_value

if TYPE_CHECKING:
    from multidp.testing.apiserver import FakeApiServer

REQUEST = "req"  # the one request name of every claim allocated here
SCHEDULING_EFFECTS = ("NoSchedule", "NoExecute")  # the taint effects that keep a device from new claims
DeviceKey = tuple[str, str, str]  # (driver, pool, device), as a claim's allocation results name a device


class Unschedulable(Exception):
    """Not enough devices for a claim; the message says what was found and why it did not do."""


def tolerates(tolerations: Iterable[Mapping[str, str]], taint: Mapping[str, Any]) -> bool:
    """Whether one of ``tolerations`` (key, operator Exists or Equal (the default), value, effect) matches
    ``taint``, as Kubernetes matches a toleration: an empty key with Exists matches every key, an empty
    effect every effect."""
    for toleration in tolerations:
        operator = toleration.get("operator") or "Equal"
        if operator not in ("Exists", "Equal"):
            raise ValueError(f"toleration {dict(toleration)}: operator must be Exists or Equal, not {operator!r}")
        key, effect = toleration.get("key") or "", toleration.get("effect") or ""
        if key and key != taint.get("key") or effect and effect != taint.get("effect"):
            continue
        if operator == "Exists" or (toleration.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _serves(obj: Mapping[str, Any], resource: str) -> bool:
    """Whether the slice lists devices of ``resource``: multidp's ``multidp.io/resource`` attribute (pool
    names may spell the resource differently), else a pool name ending in ``/<resource>``."""
    for device in obj["spec"].get("devices") or []:
        named = ((device.get("attributes") or {}).get(RESOURCE_ATTRIBUTE) or {}).get("string")
        if named is not None:
            return bool(named == resource_value(resource))
    return str(obj["spec"].get("pool", {}).get("name", "")).endswith(f"/{resource}")


def _held(api: FakeApiServer, claim: tuple[str, str]) -> set[DeviceKey]:
    """The devices allocated to every claim in the store but ``claim`` (namespace, name)."""
    claims = {key: obj for key, obj in api.claims.all().items() if key != claim}
    held: set[DeviceKey] = set()
    for obj in claims.values():
        for result in (((obj.get("status") or {}).get("allocation") or {}).get("devices") or {}).get("results") or []:
            held.add((result["driver"], result["pool"], result["device"]))
    return held


def _newest_complete(slices: Sequence[Mapping[str, Any]]) -> tuple[dict[str, list[Mapping[str, Any]]], list[str]]:
    """The slices of each pool's newest generation, for the pools where it is complete; and a line for each
    pool left out (its generation and how many of its slices are there)."""
    pools: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for obj in slices:
        pools[obj["spec"]["pool"]["name"]].append(obj)
    complete: dict[str, list[Mapping[str, Any]]] = {}
    incomplete: list[str] = []
    for pool, members in sorted(pools.items()):
        newest = max(obj["spec"]["pool"]["generation"] for obj in members)
        current = [obj for obj in members if obj["spec"]["pool"]["generation"] == newest]
        counts = {obj["spec"]["pool"]["resourceSliceCount"] for obj in current}
        if counts == {len(current)}:
            complete[pool] = current
        else:
            incomplete.append(f"pool {pool} generation {newest}: {len(current)} slices of "
                              f"{'/'.join(map(str, sorted(counts)))}")
    return complete, incomplete


class SchedulerStandIn:
    """Allocates claims for the devices that ``api`` (a :class:`FakeApiServer`) has in its slices."""

    def __init__(self, api: FakeApiServer) -> None:
        self.api = api

    def allocate(self, namespace: str, name: str, driver: str, resource: str, count: int = 1,
                 tolerations: Iterable[Mapping[str, str]] = (), node: str | None = None) -> dict[str, Any]:
        """Allocate ``count`` devices of ``driver``'s pools for ``resource`` (on ``node`` when given) to a new
        claim ``namespace/name`` (request "req"), written into ``api.claims``; the claim. Unschedulable
        naming why when fewer devices are free."""
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        tolerations = list(tolerations)
        wanted = [obj for obj in self.api.slices.slices(driver=driver, node=node) if _serves(obj, resource)]
        pools, incomplete = _newest_complete(wanted)
        held = _held(self.api, (namespace, name))
        chosen: list[dict[str, str]] = []
        tainted: set[str] = set()
        taken = 0
        for pool, members in pools.items():
            for device in (device for obj in members for device in obj["spec"].get("devices") or []):
                blocking = [taint for taint in device.get("taints") or []
                            if taint.get("effect") in SCHEDULING_EFFECTS and not tolerates(tolerations, taint)]
                if blocking:
                    tainted.update(f"{device['name']} ({taint.get('key')}={taint.get('value', '')}:"
                                   f"{taint.get('effect')})" for taint in blocking)
                elif (driver, pool, device["name"]) in held:
                    taken += 1
                elif len(chosen) < count:
                    chosen.append({"request": REQUEST, "driver": driver, "pool": pool, "device": device["name"]})
        if len(chosen) < count:
            where = f" on node {node}" if node else ""
            found = sum(len(obj["spec"].get("devices") or []) for members in pools.values() for obj in members)
            reasons = [f"{found} devices in complete pools", f"{taken} allocated to other claims",
                       f"{len(tainted)} tainted and not tolerated" + (f": {', '.join(sorted(tainted))}"
                                                                       if tainted else ""), *incomplete]
            raise Unschedulable(f"claim {namespace}/{name}: {count} devices of {driver} for {resource}{where} "
                                f"wanted, {len(chosen)} free ({len(wanted)} slices; " + "; ".join(reasons) + ")")
        return self.api.claims.add(namespace, name, chosen)
