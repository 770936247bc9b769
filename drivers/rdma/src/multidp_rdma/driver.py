"""The RDMA driver: discovery when the device set changes, health on every poll, pools, Allocate.

Every poll (``pollInterval``, 0.25 s by default) lists the three sysfs class
directories and compares them with the last discovery; a difference, a udev
event or ``rescanInterval`` runs a full discovery. Then each device's ports are
read (verbs when available, sysfs otherwise) and its nodes checked. Scans run
on one thread; Allocate reads an immutable state that each scan replaces whole.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from multidp import (
    AllocationRefused,
    AllocationRequest,
    CDISpec,
    ContainerAllocation,
    Device,
    Driver,
    Notify,
    PreferenceRequest,
)

from multidp_rdma import cdiedits
from multidp_rdma.advertise import SharedDevices, exclusive_device
from multidp_rdma.allocation import container_allocation
from multidp_rdma.bindings import UdevWatch, VerbsReader
from multidp_rdma.config import Pool, RdmaConfig
from multidp_rdma.devinfo import DEFAULT_DIR, DeviceInfoWriter
from multidp_rdma.discovery import class_signature, discover
from multidp_rdma.health import Verdict, judge, node_exists, read_port_states
from multidp_rdma.inventory import DEV_DIR, RDMA_CM, Discovery, RdmaDevice
from multidp_rdma.poolconfig import Claim
from multidp_rdma.pools import assign, numa_then_parent
from multidp_rdma.sysfs import ProblemLog, SysfsRoot

PROBLEM_RESCAN_S = 1.0  # how soon a half-seen device is first looked at again (then twice as long each time)


@dataclass(frozen=True)
class PoolState:
    """One pool at one scan: its members, which are healthy, and what the kubelet is told."""

    pool: Pool
    members: tuple[RdmaDevice, ...]
    healthy: frozenset[str]
    devices: tuple[Device, ...]
    by_id: Mapping[str, RdmaDevice] = field(default_factory=dict)


class RdmaDriver(Driver):
    def __init__(self, config: RdmaConfig, pools: Sequence[Pool], sysfs_root: Path, dev_root: Path,
                 log: logging.Logger, claims: Sequence[Claim] = ()) -> None:
        self.config = config
        self.pools = list(pools)
        self.claims = tuple(claims)  # an SR-IOV file's selector objects in file order (pools.assign)
        self.root = SysfsRoot(sysfs_root)
        self.dev_root = Path(dev_root)
        self.log = log
        self.poll_interval = config.poll_interval
        self._discovery_log = ProblemLog(log)
        self._health_log = ProblemLog(log)
        self._rediscover = threading.Event()
        self._signature: tuple[tuple[str, int, str], ...] | None = None
        self._discovered_at = 0.0
        self._retry_in: float | None = None  # set when the last discovery saw a device half-made
        self._discovery = Discovery()
        self._members: dict[str, list[RdmaDevice]] = {}
        self._verdicts: dict[str, tuple[bool, str]] = {}
        self._rdma_cm_missing = False
        self._state: dict[str, PoolState] = {}
        self._udev: UdevWatch | None = None
        self._verbs_attributes: dict[str, dict[str, str]] = {}
        # libibverbs sees the real node: its answers only match a tree that is the host's /sys.
        self._verbs = VerbsReader.load(log) if config.verbs == "auto" and self.root.is_host else None
        self._shared = SharedDevices()
        self._devinfo = self._devinfo_writer()
        self._devinfo_known: dict[str, set[str]] = {}  # resource → device IDs whose files may exist

    def _devinfo_writer(self) -> DeviceInfoWriter | None:
        """Where device-info files go: the standard folder on a real node (auto), a set folder, or nowhere."""
        wanted = self.config.device_info_dir
        if wanted == "off" or (wanted == "auto" and not self.root.is_host):
            return None
        return DeviceInfoWriter(Path(DEFAULT_DIR if wanted == "auto" else wanted), self.log)

    # Events ------------------------------------------------------------------------------

    def start(self, notify: Notify) -> None:
        if self.config.udev != "auto" or not self.root.is_host:
            return

        def on_event() -> None:
            self._rediscover.set()
            notify()

        self._udev = UdevWatch.start(on_event, self.log)

    def close(self) -> None:
        if self._devinfo is not None:  # as the SR-IOV plugin's server does at Stop
            for resource, ids in self._devinfo_known.items():
                self._devinfo.clean(resource, ids)
        if self._udev is not None:
            self._udev.stop()
        if self._verbs is not None:
            self._verbs.close()

    # Scanning ----------------------------------------------------------------------------

    def scan(self) -> Mapping[str, Sequence[Device]]:
        signature = class_signature(self.root)
        now = time.monotonic()
        since = now - self._discovered_at
        if (self._rediscover.is_set() or signature != self._signature or since >= self.config.rescan_seconds
                or (self._retry_in is not None and since >= self._retry_in)):
            self._rediscover.clear()
            self._run_discovery()
            self._signature = signature
            self._discovered_at = now
        state = self._evaluate()
        self._state = state
        return {resource: list(ps.devices) for resource, ps in state.items() if ps.members}

    def _next_retry(self, discovery: Discovery) -> float | None:
        """A device seen half-made (no ports, a file missing): look again soon, not at the next full
        rescan, since a device being re-created settles in a moment; back off while it stays so, up to
        the rescan interval, so that a file that never becomes readable costs no discovery per second."""
        if not discovery.skipped and not any(d.problems or not d.ports for d in discovery.devices):
            return None
        return PROBLEM_RESCAN_S if self._retry_in is None else min(self._retry_in * 2, self.config.rescan_seconds)

    def _run_discovery(self) -> None:
        before = {d.name: d.id for d in self._discovery.devices}
        discovery = discover(self.root, self._discovery_log)
        after = {d.name: d.id for d in discovery.devices}
        if after != before:
            added = sorted(set(after.items()) - set(before.items()))
            removed = sorted(set(before.items()) - set(after.items()))
            if added:
                self.log.info("RDMA devices found: %s", ", ".join(f"{n} ({i})" for n, i in added))
            if removed:
                self.log.info("RDMA devices gone: %s", ", ".join(f"{n} ({i})" for n, i in removed))
        self._discovery = discovery
        self._retry_in = self._next_retry(discovery)
        self._members = assign(discovery.devices, self.pools, self.claims)
        for pool in self.pools:
            if pool.default and not self._members[pool.resource] and discovery.devices:
                self._discovery_log.report(
                    "default-pool", f"{len(discovery.devices)} RDMA device(s) found but none has a uverbs entry "
                    f"in {self.root.path('class', 'infiniband_verbs')} (is ib_uverbs loaded?); "
                    f"{pool.resource} stays empty")
            elif not self._members[pool.resource]:
                self._discovery_log.report(
                    f"empty:{pool.resource}", f"pool {pool.resource} selects none of the {len(discovery.devices)} "
                    "RDMA device(s) on this node: it is not served until one appears (check its selectors)")
        self._clean_devinfo()
        self._discovery_log.settle("fixed")
        if self._verbs is not None:
            self._verbs.reset()
            self._verbs_attributes = {d.name: self._verbs.attributes(d) for d in discovery.devices}

    def _rdma_cm_problem(self) -> str:
        missing = not node_exists(self.dev_root, RDMA_CM)
        if missing != self._rdma_cm_missing:
            self._rdma_cm_missing = missing
            if missing:
                self.log.error("%s is missing (%s): every RDMA device is Unhealthy until it is back; "
                               "load the rdma_ucm module", f"{DEV_DIR}/{RDMA_CM}",
                               self.dev_root / "infiniband" / RDMA_CM)
            else:
                self.log.info("%s is back: RDMA devices are judged on their own again", f"{DEV_DIR}/{RDMA_CM}")
        return f"{DEV_DIR}/{RDMA_CM} is missing on this node" if missing else ""

    def _verdict(self, device: RdmaDevice, rdma_cm_problem: str) -> Verdict:
        verbs = self._verbs.ports if self._verbs is not None else None
        ports = read_port_states(device, self._health_log, verbs)
        uverbs_node = device.uverbs is not None and node_exists(self.dev_root, device.uverbs.name)
        all_ports = self.config.port_health == "all"
        own = judge(device, ports, all_ports, uverbs_node, "")
        previous = self._verdicts.get(device.name)
        if previous is None or previous != (own.healthy, own.reason):
            label = f"RDMA device {device.name} ({device.id})"
            if not own.healthy:
                self.log.warning("%s is Unhealthy: %s", label, own.reason)
            elif previous is not None:
                self.log.info("%s is Healthy again", label)
            self._verdicts[device.name] = (own.healthy, own.reason)
        if rdma_cm_problem:
            return judge(device, ports, all_ports, uverbs_node, rdma_cm_problem)
        return own

    def _evaluate(self) -> dict[str, PoolState]:
        # A node without RDMA devices has no rdma_cm either: nothing to say about it.
        rdma_cm_problem = self._rdma_cm_problem() if self._discovery.devices else ""
        verdicts = {d.name: self._verdict(d, rdma_cm_problem) for d in self._discovery.devices}
        self._health_log.settle("readable again")
        for gone in set(self._verdicts) - set(verdicts):
            del self._verdicts[gone]
        state: dict[str, PoolState] = {}
        for pool in self.pools:
            members = tuple(self._members.get(pool.resource, ()))
            healthy = frozenset(d.id for d in members if verdicts[d.name].healthy)
            devices: tuple[Device, ...] = ()
            if pool.shared and members:
                devices = self._shared.devices(pool, members, healthy, verdicts)
            elif not pool.shared:
                devices = tuple(exclusive_device(d, verdicts[d.name], self._verbs_attributes.get(d.name, {}))
                                for d in members)
            state[pool.resource] = PoolState(pool, members, healthy, devices, {d.id: d for d in members})
        return state

    # Kubelet calls -------------------------------------------------------------------------

    def allocate(self, request: AllocationRequest) -> ContainerAllocation:
        state = self._state.get(request.resource)
        if state is None or not state.members:
            raise AllocationRefused(f"resource {request.resource} has no RDMA devices on this node now")
        if state.pool.shared:
            members = [d for d in state.members if d.id in state.healthy]
            if not members:
                raise AllocationRefused(f"no RDMA device of {request.resource} is Healthy now")
        else:
            gone = [i for i in request.device_ids if i not in state.by_id]
            if gone:
                raise AllocationRefused(f"RDMA device(s) {', '.join(gone)} of {request.resource} are gone")
            members = [state.by_id[i] for i in request.device_ids]
        allocation = container_allocation(state.pool, members, self.dev_root)
        if self._devinfo is not None and state.pool.rules.devinfo and not state.pool.shared:
            self._devinfo.store(request.resource, members, self._discovery.devices)
        if self.config.use_cdi:
            kind = cdiedits.kind(state.pool)
            return replace(allocation, device_nodes=[], cdi_field=False,
                           cdi_annotation_key=cdiedits.annotation_key(kind),
                           cdi_devices=[f"{kind}={cdiedits.device_name(d)}" for d in members])
        return allocation

    def cdi_specs(self) -> Sequence[CDISpec]:
        if not self.config.use_cdi:
            return ()
        return cdiedits.specs((ps.pool, ps.members) for ps in self._state.values())

    def _clean_devinfo(self) -> None:
        """Remove the files of exclusive devices first seen now, as the SR-IOV plugin does when it starts."""
        if self._devinfo is None:
            return
        for pool in self.pools:
            if pool.shared or not pool.rules.devinfo:
                continue
            known = self._devinfo_known.setdefault(pool.resource, set())
            new = {d.id for d in self._members[pool.resource]} - known
            self._devinfo.clean(pool.resource, sorted(new))
            known.update(new)

    def preferred_allocation(self, request: PreferenceRequest) -> Sequence[str] | None:
        state = self._state.get(request.resource)
        if state is None or state.pool.shared:
            return None  # one shared device: the host's pick is as good as any
        by_id = state.by_id

        def numa(device_id: str) -> tuple[int, ...]:
            device = by_id.get(device_id)
            return device.numa_nodes if device else ()

        def parent(device_id: str) -> str:
            device = by_id.get(device_id)
            return device.pci.parent if device and device.pci else ""

        return numa_then_parent(request, numa, parent)
