"""What the kubelet is told about each pool: one device per member in an exclusive pool; in a shared
pool one device with ``rdmaHcaMax`` host-made replicas (``<pool>::n``), or, with Mellanox's IDs,
``rdmaHcaMax`` plain devices ``0`` … ``N-1`` that the driver maps to the pool itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from multidp import Device, Health

from multidp_rdma.health import Verdict
from multidp_rdma.inventory import Attribute, RdmaDevice
from multidp_rdma.poolconfig import Pool

_SHARED_REASON_LIMIT = 3


def info(device: RdmaDevice, verdict: Verdict, extra: Mapping[str, str]) -> dict[str, str]:
    """A few facts for ``multidp devices``."""
    facts = {"rdma": device.name, "link": device.link_layers,
             "ports": ", ".join(p.describe().removeprefix("port ") for p in verdict.ports) or "none"}
    if device.netdevs:
        facts["netdev"] = ",".join(device.netdevs)
    if device.pci is not None:
        facts["driver"] = device.pci.driver or "unbound"
        if device.pci.pf_address:
            facts["pf"] = device.pci.pf_address
    facts.update(extra)
    return facts


def exclusive_device(device: RdmaDevice, verdict: Verdict, extra: Mapping[str, str],
                     cdi_devices: tuple[str, ...] = ()) -> Device:
    """``cdi_devices``: what a CDI answer names (the host marks the device Unhealthy while their spec is unwritten)."""
    return Device(id=device.id, health=Health.HEALTHY if verdict.healthy else Health.UNHEALTHY,
                  numa_nodes=device.numa_nodes, reason=verdict.reason, info=info(device, verdict, extra),
                  cdi_devices=cdi_devices, attributes=device.attributes)


class SharedDevices:
    """The devices of shared pools, rebuilt only when what they say changes (Mellanox's IDs make
    ``rdmaHcaMax`` objects per pool, and a scan runs every poll)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[object, ...], tuple[Device, ...]]] = {}

    def devices(self, pool: Pool, members: Sequence[RdmaDevice], healthy: frozenset[str],
                verdicts: Mapping[str, Verdict], cdi_devices: tuple[str, ...] = (),
                shared: Mapping[str, Attribute] | None = None) -> tuple[Device, ...]:
        """``shared``: the attributes of the pool's device (what all its members have in common)."""
        numa = tuple(sorted({n for d in members for n in d.numa_nodes}))
        reason = ""
        if not healthy:
            reasons = [f"{d.name}: {verdicts[d.name].reason}" for d in members[:_SHARED_REASON_LIMIT]]
            more = f"; and {len(members) - _SHARED_REASON_LIMIT} more" if len(members) > _SHARED_REASON_LIMIT else ""
            reason = "no member is Healthy: " + "; ".join(reasons) + more
        facts = {"members": ",".join(d.name for d in members), "healthy": f"{len(healthy)}/{len(members)}"}
        health = Health.HEALTHY if healthy else Health.UNHEALTHY
        shared = shared or {}
        key = (health, numa, reason, tuple(facts.items()), cdi_devices, shared)
        cached = self._cache.get(pool.resource)
        if cached is not None and cached[0] == key:
            return cached[1]
        if pool.replicas == 0:  # a placeholder pool (rdmaHcaMax 0), as Mellanox's: no devices
            made: tuple[Device, ...] = ()
        elif pool.rules.index_ids:  # strconv.Itoa(n), n < rdmaHcaMax: Mellanox's own IDs
            made = tuple(Device(id=str(n), health=health, numa_nodes=numa, reason=reason, info=facts,
                                cdi_devices=cdi_devices, attributes=shared) for n in range(pool.replicas))
        else:
            made = (Device(id=pool.short_name, health=health, numa_nodes=numa, replicas=pool.replicas,
                           reason=reason, info=facts, cdi_devices=cdi_devices, attributes=shared),)
        self._cache[pool.resource] = (key, made)
        return made
