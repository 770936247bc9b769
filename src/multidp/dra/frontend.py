"""One driver served through DRA: its devices by DRA name, their health, its sockets and prepared claims.

The driver's scans arrive here instead of the device-plugin table. Each resource is one pool
(``<node>/<resource>``); each device is named as :mod:`multidp.dra.names` says (replicas are not
offered: DRA shares devices by other means). The DRA service socket is served first, then the
registration socket appears in the kubelet's registry, so the kubelet never finds a plugin that does
not answer yet; stopping removes the registration socket first.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import grpc
import msgspec

from multidp.config.settings import Settings
from multidp.dra.checkpoint import Checkpoint, read_boot_id
from multidp.dra.claims import ClaimReader
from multidp.dra.names import device_name, pool_name
from multidp.dra.podresources import PodResourcesUnavailable
from multidp.dra.podwatch import Holders, PodHeldWatch
from multidp.dra.prepare import ClaimPreparer
from multidp.dra.registration import RegistrationService
from multidp.dra.service import DraService
from multidp.dra.slices import Offered, SlicePublisher
from multidp.dra.usable import mark
from multidp.kubeapi import LazyClient
from multidp.model import Device
from multidp.plugins.runner import DriverRunner
from multidp.serving.cdi import CDIRegistry
from multidp.serving.eventloop import ServingLoop

log = logging.getLogger(__name__)

STOP_GRACE_S = 1.0


class DeviceState(msgspec.Struct, frozen=True):
    resource: str
    driver_id: str
    healthy: bool
    reason: str
    since: int  # unix seconds of the last health change
    cdi_devices: tuple[str, ...] = ()


class DraStats(msgspec.Struct, dict=True):
    """Prepare and Unprepare counts and time spent, for /metrics."""

    prepares: int = 0
    prepare_errors: int = 0
    prepare_seconds: float = 0.0
    unprepares: int = 0
    unprepare_errors: int = 0
    unprepare_seconds: float = 0.0

    def __post_init__(self) -> None:
        # Not a field: out of repr, __init__ and ==, as the counters' own lock (dict=True gives room for it).
        self._lock = threading.Lock()

    def prepared(self, ok: bool, seconds: float) -> None:
        with self._lock:
            self.prepares += 1
            self.prepare_errors += not ok
            self.prepare_seconds += seconds

    def unprepared(self, ok: bool, seconds: float) -> None:
        with self._lock:
            self.unprepares += 1
            self.unprepare_errors += not ok
            self.unprepare_seconds += seconds


def node_name(environ: Mapping[str, str]) -> str:
    return environ.get("NODE_NAME") or socket.gethostname().lower()


class DraFrontend:
    """The DRA face of one driver."""

    def __init__(self, driver: str, dra_name: str, runner: DriverRunner | None, settings: Settings, cdi: CDIRegistry,
                 environ: Mapping[str, str]) -> None:
        self.driver, self.dra_name, self.node = driver, dra_name, node_name(environ)
        self.client = LazyClient(environ)  # one API client for the claims read and the slices written
        self.directory = settings.dra_plugins_dir / dra_name
        self.socket_path = self.directory / "dra.sock"
        self.registration_path = settings.dra_registry_dir / f"{dra_name}-reg.sock"
        self.stats = DraStats()
        self._lock = threading.Lock()
        self._devices: dict[tuple[str, str], DeviceState] = {}  # (pool, device name) -> state
        self._listeners: list[Callable[[], None]] = []
        self.preparer = ClaimPreparer(driver, dra_name, Checkpoint(self.directory / "checkpoint.json"),
                                      read_boot_id(settings.boot_id_file), cdi, ClaimReader(self.client), runner,
                                      self.lookup, settings.timeouts.allocate, self.declared_cdi, self.blocked)
        self._described: dict[tuple[str, str], Device] = {}
        self._clashes: set[tuple[str, str]] = set()  # driver IDs that met under one DRA name (logged)
        self._inventory: Mapping[str, Sequence[Device]] | None = None  # the last good scan
        self._pod_held: Holders = {}  # devices pods got through the device plugin, until those pods end
        self.podwatch = PodHeldWatch(driver, settings.pod_resources_socket, lambda: list(self._inventory or {}),
                                     self._pods_changed)
        self.slices: SlicePublisher | None = None
        if environ.get("NODE_NAME"):  # the Node to own the slices; without it, no API side (part 1 alone)
            self.slices = SlicePublisher(driver, dra_name, self.node, self.client, self.offered)
        self.registration = RegistrationService(dra_name, self.socket_path,
                                                self.slices.changed if self.slices else lambda: None)
        self._loop = ServingLoop.shared()
        self._servers: list[grpc.aio.Server] = []
        self._service: DraService | None = None
        self._serving = threading.Lock()  # start and stop, one at a time
        self._closed = False

    # Devices and health ------------------------------------------------------------------

    def lookup(self, pool: str, name: str) -> tuple[str, str] | None:
        with self._lock:
            state = self._devices.get((pool, name))
        return None if state is None else (state.resource, state.driver_id)

    def declared_cdi(self, pool: str, name: str) -> tuple[str, ...]:
        with self._lock:
            state = self._devices.get((pool, name))
        return () if state is None else state.cdi_devices

    def health(self) -> dict[tuple[str, str], DeviceState]:
        with self._lock:
            return dict(self._devices)

    def report(self, inventory: Mapping[str, Sequence[Device]] | None, error: str) -> bool:
        """A scan of the driver: its devices now (None: the scan failed, every device Unhealthy with ``error``);
        whether anything changed."""
        now = int(time.time())
        if inventory is not None:
            self._inventory = inventory
            inventory = self._mark_pod_held(inventory)
        with self._lock:
            if inventory is None:
                fresh = {key: self._changed(state, False, error, now) for key, state in self._devices.items()}
                described = self._described
            else:
                fresh, described = self._states(inventory, now)
            changed = fresh != self._devices
            published = changed or described != self._described
            self._devices, self._described = fresh, described
            listeners = list(self._listeners)
        if changed:
            for wake in listeners:
                wake()
        if published and self.slices is not None:
            self.slices.changed()
        return changed

    def _mark_pod_held(self, inventory: Mapping[str, Sequence[Device]]) -> Mapping[str, Sequence[Device]]:
        held = self._pod_held
        return mark(inventory, {key: self._held_reason(pod) for key, pod in held.items()}) if held else inventory

    @staticmethod
    def _held_reason(pod: str) -> str:
        return f"held by pod {pod} through the device plugin until it ends"

    def _pods_changed(self, holders: Holders) -> None:
        self._pod_held = holders
        if self._inventory is not None:
            self.report(self._inventory, "")

    def blocked(self, pool: str, name: str) -> str | None:
        """Why Prepare may not take the device now (a pod holds it through the device plugin), or None."""
        with self._lock:
            state = self._devices.get((pool, name))
        pod = None if state is None else self._pod_held.get((state.resource, state.driver_id))
        return None if pod is None else self._held_reason(pod)

    def offered(self) -> list[Offered]:
        """The devices as the ResourceSlices list them: none while the driver does not run (Unprepare only)."""
        if self.preparer.runner is None:
            return []
        with self._lock:
            return [Offered(pool, name, state.resource, self._described[(pool, name)], state.healthy)
                    for (pool, name), state in sorted(self._devices.items()) if (pool, name) in self._described]

    def _states(self, inventory: Mapping[str, Sequence[Device]], now: int
                ) -> tuple[dict[tuple[str, str], DeviceState], dict[tuple[str, str], Device]]:
        fresh: dict[tuple[str, str], DeviceState] = {}
        described: dict[tuple[str, str], Device] = {}
        for resource, devices in inventory.items():
            pool = pool_name(self.node, resource)
            for device in devices:
                key = (pool, device_name(device.id))
                if key in fresh:
                    if (clash := (fresh[key].driver_id, device.id)) not in self._clashes:  # once, not every poll
                        self._clashes.add(clash)
                        log.error("driver %s: devices %s and %s have one DRA name %s; the second is left out",
                                  self.driver, *clash, key[1])
                    continue
                reason = device.reason if not device.healthy else ""
                old = self._devices.get(key)
                cdi = tuple(device.cdi_devices)
                state = DeviceState(resource, device.id, device.healthy, reason, now, cdi)
                fresh[key] = state if old is None or old.cdi_devices != cdi else self._changed(
                    old, device.healthy, reason, now)
                described[key] = device
        return fresh, described

    @staticmethod
    def _changed(old: DeviceState, healthy: bool, reason: str, now: int) -> DeviceState:
        if old.healthy == healthy and old.reason == reason:
            return old
        return DeviceState(old.resource, old.driver_id, healthy, reason, now, old.cdi_devices)

    def listen(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(wake)

    def unlisten(self, wake: Callable[[], None]) -> None:
        with self._lock:
            if wake in self._listeners:
                self._listeners.remove(wake)

    def rebind(self, runner: DriverRunner, allocate_timeout: float) -> None:
        """The driver was created again (reload, label change, back after a failure): later calls go to it.
        Back from Unprepare-only, pods may have got its devices through the device plugin meanwhile."""
        returning = self.preparer.runner is None
        self.preparer.runner, self.preparer.stopped = runner, ""
        self.preparer.allocate_timeout = allocate_timeout
        if returning and self._servers:
            self._check_pods()

    def orphan(self, reason: str) -> None:
        """The driver stopped while claims are prepared: serve Unprepare on, refuse Prepare, and stream every
        known device Unhealthy with ``reason`` (pods holding them can still terminate)."""
        self.preparer.runner, self.preparer.stopped = None, reason
        self.report(None, f"driver {self.driver} does not run on this node now: {reason}")

    # Sockets ------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve the DRA socket, then the registration socket; nothing once stopped. Raises (OSError,
        RuntimeError) when a socket cannot be served, leaving none behind."""
        with self._serving:
            if self._closed:
                return
            self._check_pods()
            try:
                self._loop.run(self._start())
            except BaseException:
                self._stop_servers()
                raise
        if self.slices is not None:
            self.slices.start()
        log.info("driver %s: serving DRA as %s on %s (registration %s)", self.driver, self.dra_name,
                 self.socket_path, self.registration_path)

    def _check_pods(self) -> None:
        """Before the first socket: which devices pods still hold through the device plugin (then polled)."""
        if self.preparer.runner is None:
            return
        try:
            held = self.podwatch.check()
        except PodResourcesUnavailable as exc:
            log.warning("driver %s: cannot tell which devices running pods got through the device plugin: %s; "
                        "DRA offers them all", self.driver, exc)
            return
        if held:
            self.podwatch.start()

    async def _start(self) -> None:
        self._service = DraService(self)
        self._servers.append(await self._serve(self.socket_path, self._service.handlers()))
        self._servers.append(await self._serve(self.registration_path, [self.registration.handler()]))

    @staticmethod
    async def _serve(path: Path, handlers: list[grpc.GenericRpcHandler]) -> grpc.aio.Server:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # a socket left by a host that died
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(handlers)
        server.add_insecure_port(f"unix://{path}")
        await server.start()
        return server

    def stop(self, withdraw: bool = True) -> None:
        """Remove the registration socket (the kubelet deregisters), then stop serving; with ``withdraw``
        delete the driver's ResourceSlices too (not when the host only restarts: capacity stays). A
        :meth:`start` racing this one serves nothing."""
        with self._serving:
            self._closed = True
            self.podwatch.stop()
            if self.slices is not None:
                self.slices.stop(withdraw)
            self._stop_servers()

    def _stop_servers(self) -> None:
        with contextlib.suppress(OSError):  # e.g. its folder is a file: nothing of ours there
            self.registration_path.unlink(missing_ok=True)
        servers, self._servers = list(reversed(self._servers)), []
        for server in servers:
            self._loop.run(server.stop(STOP_GRACE_S))
        if self._service is not None:
            self._service.executor.shutdown(wait=False)
        with contextlib.suppress(OSError):
            self.socket_path.unlink(missing_ok=True)
