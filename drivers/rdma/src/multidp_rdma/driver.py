"""The RDMA driver: discovery when the device set changes, health on events or polls, pools, Allocate.

Where the kernel announces changes (kernel uevents for hot-plug, rtnetlink link
events for RoCE netdevs, verbs asynchronous events for any port; see events.py),
a scan runs when one arrives and reads only the devices it names; nothing else
runs between safety-net rescans every ``rescanInterval``. What no event covers
is polled every ``pollInterval`` (0.25 s by default): without uevents, the three
sysfs class directories are listed and compared with the last discovery; a
device whose ports no event covers has its port state read. A full discovery
runs on a difference, a uevent, or ``rescanInterval``. Ports are read through
verbs when available, sysfs otherwise. Scans run on one thread; Allocate reads
an immutable state that each scan replaces whole.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import msgspec
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
from multidp_rdma.bindings import VerbsReader
from multidp_rdma.config import Pool, RdmaConfig
from multidp_rdma.describe import common
from multidp_rdma.devinfo import DEFAULT_DIR, DeviceInfoWriter
from multidp_rdma.discovery import class_signature, discover
from multidp_rdma.events import EventHub
from multidp_rdma.inventory import Attribute, Discovery, RdmaDevice
from multidp_rdma.judging import HealthJudge
from multidp_rdma.poolconfig import Claim
from multidp_rdma.pools import assign, numa_then_parent
from multidp_rdma.sources import DeviceWatch, Source, event_sources
from multidp_rdma.sysfs import ProblemLog, SysfsRoot

PROBLEM_RESCAN_S = 1.0  # how soon a half-seen device is first looked at again (then twice as long each time)


class PoolState(msgspec.Struct, frozen=True):
    """One pool at one scan: its members, which are healthy, and what the kubelet is told."""

    pool: Pool
    members: tuple[RdmaDevice, ...]
    healthy: frozenset[str]
    devices: tuple[Device, ...]
    by_id: Mapping[str, RdmaDevice] = msgspec.field(default_factory=dict)


class RdmaDriver(Driver):
    def __init__(self, config: RdmaConfig, pools: Sequence[Pool], sysfs_root: Path, dev_root: Path,
                 log: logging.Logger, claims: Sequence[Claim] = (), simulation: object = None,
                 dra: bool = False) -> None:
        self.config = config
        self.pools = list(pools)
        self.claims = tuple(claims)  # an SR-IOV file's selector objects in file order (pools.assign)
        self.root = SysfsRoot(sysfs_root)
        self.dev_root = Path(dev_root)
        self.log = log
        self.dra = dra  # served through DRA: CDI names travel in the claim's answer, never in an annotation
        self.poll_interval = config.poll_interval
        self._discovery_log = ProblemLog(log)
        self._simulation = simulation
        self._events = EventHub(log)
        self._sources: list[Source] = []
        self._watch: DeviceWatch | None = None
        self._signature: tuple[tuple[str, int, str], ...] | None = None
        self._discovered_at = 0.0
        self._retry_in: float | None = None  # set when the last discovery saw a device half-made
        self._discovery = Discovery()
        self._members: dict[str, list[RdmaDevice]] = {}
        self._shared_attributes: dict[str, dict[str, Attribute]] = {}  # a shared pool's, made at discovery
        self._state: dict[str, PoolState] = {}
        self._verbs_attributes: dict[str, dict[str, str]] = {}
        # libibverbs sees the real node: its answers only match a tree that is the host's /sys.
        self._verbs = VerbsReader.load(log) if config.verbs == "auto" and self.root.is_host else None
        self._judge = HealthJudge(self.dev_root, log, config.port_health == "all", self._verbs)
        self._shared = SharedDevices()
        self._devinfo = self._devinfo_writer()
        self._devinfo_known: dict[str, set[str]] = {}  # resource → device IDs whose files may exist

    def _devinfo_writer(self) -> DeviceInfoWriter | None:
        """Where device-info files go: the standard folder on a real node (auto), a set folder, or nowhere."""
        wanted = self.config.device_info_folder
        if wanted == "off" or (wanted == "auto" and not self.root.is_host):
            return None
        return DeviceInfoWriter(Path(DEFAULT_DIR if wanted == "auto" else wanted), self.log)

    # Events ------------------------------------------------------------------------------

    def start(self, notify: Notify) -> None:
        self._events.attach(notify)
        self._sources, self._watch = event_sources(self.config, self._events, self.log, host=self.root.is_host,
                                                   verbs_loaded=self._verbs is not None, simulation=self._simulation)
        if self._watch is not None:
            self._watch.watch([d.name for d in self._discovery.devices])
        for source in self._sources:
            source.start()

    def close(self) -> None:
        if self._devinfo is not None:  # as the SR-IOV plugin's server does at Stop
            for resource, ids in self._devinfo_known.items():
                self._devinfo.clean(resource, ids)
        for source in self._sources:
            source.stop()
        if self._verbs is not None:
            self._verbs.close()

    # Scanning ----------------------------------------------------------------------------

    def scan(self) -> Mapping[str, Sequence[Device]]:
        pending = self._events.take()
        # With uevents, hot-plug is announced: no directory is listed between rescans.
        signature = class_signature(self.root) if not self._events.uevents_live else self._signature
        now = time.monotonic()
        since = now - self._discovered_at
        full = (pending.rediscover or signature != self._signature or since >= self.config.rescan_seconds
                or (self._retry_in is not None and since >= self._retry_in))
        if full:
            self._run_discovery()
            self._signature = signature
            self._discovered_at = now
        uncovered = [d.name for d in self._discovery.devices if not self._events.covered(d)]
        state = self._evaluate(None if full else set(uncovered) | pending.devices)
        self._state = state
        since = time.monotonic() - self._discovered_at
        until = self.config.rescan_seconds - since
        if self._retry_in is not None:
            until = min(until, self._retry_in - since)
        self.poll_interval = self._events.next_poll(uncovered, self.config.poll_interval, self.config.rescan_seconds,
                                                    until)
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
        self._events.set_devices(discovery.devices)
        if self._watch is not None:  # also re-opens a device re-created under the same name
            self._watch.watch([d.name for d in discovery.devices])
        self._retry_in = self._next_retry(discovery)
        self._members = assign(discovery.devices, self.pools, self.claims)
        self._shared_attributes = {pool.resource: common([d.attributes for d in self._members[pool.resource]])
                                   for pool in self.pools if pool.shared}
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

    def _evaluate(self, only: set[str] | None) -> dict[str, PoolState]:
        """Judge every device, reading the ports and nodes of those in ``only`` (None: all) again."""
        verdicts = self._judge.verdicts(self._discovery.devices, only)
        state: dict[str, PoolState] = {}
        for pool in self.pools:
            members = tuple(self._members.get(pool.resource, ()))
            healthy = frozenset(d.id for d in members if verdicts[d.name].healthy)
            devices: tuple[Device, ...] = ()
            cdi = self.config.use_cdi  # then each device declares the CDI devices its answers name
            if pool.shared and members:
                named = cdiedits.qualified_names(pool, members) if cdi else ()
                devices = self._shared.devices(pool, members, healthy, verdicts, named,
                                               self._shared_attributes.get(pool.resource))
            elif not pool.shared:
                devices = tuple(exclusive_device(d, verdicts[d.name], self._verbs_attributes.get(d.name, {}),
                                                 cdiedits.qualified_names(pool, (d,)) if cdi else ())
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
            names = list(cdiedits.qualified_names(state.pool, members))
            if self.dra:  # the claim's answer carries the CDI IDs; DRA has no annotations
                return replace(allocation, device_nodes=[], cdi_devices=names)
            kind = cdiedits.kind(state.pool)
            return replace(allocation, device_nodes=[], cdi_field=False,
                           cdi_annotation_key=cdiedits.annotation_key(kind), cdi_devices=names)
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
