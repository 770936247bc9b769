"""The host: drivers → resources → one endpoint per resource.

Scan → diff → one server per resource, in the manner of Intel's device-plugin
framework: each driver's runner reports its inventory; the host creates an
endpoint for every new resource, updates the ones it has, and withdraws the
ones that went away (empty list first, then the server stops). File events in
the plugin dir drive re-registration after a kubelet restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from multidp.cdi import CDIRegistry
from multidp.config import Settings
from multidp.drivers import (
    DISABLED,
    FAILED,
    NOT_SELECTED,
    RUNNING,
    DriverFactory,
    DriverStatus,
    describe_failure,
    selected_names,
)
from multidp.endpoint import Endpoint, is_socket
from multidp.errors import DriverCallError
from multidp.model import Device
from multidp.names import SOCKET_PREFIX, resource_name_problem, socket_name
from multidp.registry import PluginRegistry
from multidp.resource import ResourceState
from multidp.runner import DriverRunner
from multidp.service import DevicePluginService
from multidp.watch import DirWatcher

log = logging.getLogger(__name__)

SAFETY_NET_S = 2.0


class Host:
    """One multidp process's worth of drivers and endpoints."""

    def __init__(self, settings: Settings, registry: PluginRegistry, environ: Mapping[str, str] | None = None,
                 workdir: Path | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.factory = DriverFactory(settings, registry, environ, workdir)
        self.cdi = CDIRegistry(settings.cdi_dir)
        self.statuses: dict[str, DriverStatus] = {}
        self.runners: dict[str, DriverRunner] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self._owner: dict[str, str] = {}  # resource -> driver
        self._refused: set[tuple[str, str]] = set()
        self._lock = threading.RLock()
        self._stopped = threading.Event()
        self._watcher = DirWatcher(
            [settings.plugin_dir, settings.plugin_dir.parent, settings.kubelet_socket_path.parent],
            self._on_created,
            self._on_deleted,
        )
        self._safety = threading.Thread(target=self._safety_net, name="safety-net", daemon=True)

    # Starting -----------------------------------------------------------------

    def start(self) -> None:
        """Bring up every selected, enabled driver; raises UnknownDrivers for a bad --drivers."""
        names = selected_names(self.settings, self.registry)
        plugin_dir = self.settings.plugin_dir
        if self.settings.kubelet_socket_path.parent.absolute() != plugin_dir.absolute():
            log.warning(
                "the kubelet socket %s is outside the plugin dir %s: the kubelet looks for plugin sockets "
                "in its own socket's directory",
                self.settings.kubelet_socket_path,
                plugin_dir,
            )
        plugin_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_sockets()
        self._watcher.start()
        for name in self.registry.names:
            if name not in names:
                self.statuses[name] = DriverStatus(name, self.factory.info(name).origin, NOT_SELECTED,
                                                   "not in --drivers")
        threads = [threading.Thread(target=self._bring_up, args=(n,), name=f"start-{n}") for n in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self._safety.start()
        if not self.endpoints:
            log.warning("nothing to serve yet: no enabled driver found devices; waiting for changes")

    def _bring_up(self, name: str) -> None:
        """Create and start one driver (again, on reload); a failure stays with it."""
        origin = self.factory.info(name).origin
        previous = self.runners.get(name)
        try:
            enabled, _ = self.factory.enabled(name)
            created = self.factory.create(name) if enabled else None
        except Exception as exc:  # noqa: BLE001 - any failure of one driver stays with it
            reason = describe_failure(exc)
            if previous is not None:
                log.error("driver %s: %s; keeping it running as it was", name, reason)
            else:
                self._fail(name, self.factory.info(name).origin, reason)
            return
        if created is None:
            log.info("driver %s (%s) is disabled in config", name, origin)
            self._retire(name)
            self.statuses[name] = DriverStatus(name, origin, DISABLED, "disabled in config")
            return
        origin = self.factory.info(name).origin
        runner = DriverRunner(name, created.driver, self.settings.timeouts, self._on_inventory)
        with self._lock:
            self.runners[name] = runner
            for resource, owner in self._owner.items():
                if owner == name:
                    self.endpoints[resource].service.runner = runner
            self.statuses[name] = DriverStatus(name, origin, RUNNING)
        if previous is not None:
            previous.stop()
        log.info("driver %s (%s) running", name, origin)
        runner.scan_now()
        runner.start()

    def _retire(self, name: str) -> None:
        """Stop a driver that no longer runs here; withdraw its resources."""
        with self._lock:
            runner = self.runners.pop(name, None)
        if runner is None:
            return
        self._withdraw([r for r, d in list(self._owner.items()) if d == name])
        runner.stop()

    def _withdraw(self, resources: list[str]) -> None:
        with self._lock:
            endpoints = [self.endpoints.pop(r) for r in resources if r in self.endpoints]
            for resource in resources:
                self._owner.pop(resource, None)
        for endpoint in endpoints:
            log.info("withdrawing resource %s", endpoint.resource)
            threading.Thread(target=endpoint.stop, args=(True,), name="withdraw", daemon=True).start()

    def reload(self, settings: Settings) -> None:
        """Apply a new config (SIGHUP): every driver is created again and rescanned.

        The plugin dir and kubelet socket stay as they were; a driver whose new
        config is bad keeps running with its old one.
        """
        old = self.settings
        settings.plugin_dir, settings.kubelet_socket = old.plugin_dir, old.kubelet_socket
        settings.simulate = old.simulate
        self.settings = settings
        self.factory = DriverFactory(settings, self.registry, self.factory.environ, self.factory.workdir)
        self.cdi.directory = settings.cdi_dir
        names = selected_names(settings, self.registry)
        for name in list(self.runners):
            if name not in names:
                self._retire(name)
                self.statuses[name] = DriverStatus(name, self.factory.info(name).origin, NOT_SELECTED,
                                                   "not in --drivers")
        threads = [threading.Thread(target=self._bring_up, args=(n,), name=f"reload-{n}") for n in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _fail(self, name: str, origin: str, reason: str) -> None:
        log.error("driver %s (%s) failed: %s", name, origin, reason)
        with self._lock:
            self.statuses[name] = DriverStatus(name, origin, FAILED, reason)

    @property
    def failed_drivers(self) -> list[DriverStatus]:
        return [s for s in self.statuses.values() if s.state == FAILED]

    def _remove_stale_sockets(self) -> None:
        plugin_dir = self.settings.plugin_dir
        for path in [*plugin_dir.glob(f"{SOCKET_PREFIX}*.sock"), *plugin_dir.glob(f".{SOCKET_PREFIX}*.sock.*")]:
            if is_socket(path):
                log.info("removing stale socket %s", path)
                path.unlink(missing_ok=True)

    # Inventory → endpoints ---------------------------------------------------------

    def _on_inventory(self, runner: DriverRunner, inventory: Mapping[str, Sequence[Device]] | None,
                      error: str) -> None:
        if self._stopped.is_set():
            return
        driver = runner.name
        changed = False
        with self._lock:
            if self.runners.get(driver) is not runner:
                return  # a late report from a runner that was replaced
            owned = [r for r, d in self._owner.items() if d == driver]
            if inventory is None:
                for resource in owned:
                    self.endpoints[resource].service.state.mark_unhealthy(error)
                return
            claimed = self._claims(driver, inventory)
            for resource, devices in claimed.items():
                endpoint = self.endpoints.get(resource)
                if endpoint is None:
                    self._add_endpoint(driver, resource, runner, devices)
                    changed = True
                else:
                    changed |= endpoint.service.state.update(devices)
            gone = [r for r in owned if r not in claimed]
            self.statuses[driver].resources = sorted(claimed)
        if gone:
            log.info("driver %s no longer reports %s", driver, ", ".join(gone))
            self._withdraw(gone)
        if changed or gone or runner.scans <= 1:
            self._publish_cdi(runner)

    def _claims(self, driver: str, inventory: Mapping[str, Sequence[Device]]) -> dict[str, Sequence[Device]]:
        """The resources ``driver`` may serve. Two drivers claiming one resource:
        the first by name serves it, taking it over if the other got there first."""
        claimed: dict[str, Sequence[Device]] = {}
        for resource, devices in inventory.items():
            problem = resource_name_problem(resource) if isinstance(resource, str) else "is not a string"
            owner = self._owner.get(resource)
            if problem is None and owner is not None and owner != driver:
                if driver < owner:
                    log.error("resource %s: driver %s takes it over from driver %s (the first by name serves it)",
                              resource, driver, owner)
                    # Stopped before the new endpoint registers: a stream of the old one
                    # ending after that could knock out the new one (kubernetes#121994).
                    self.endpoints.pop(resource).stop(withdraw=False)
                    del self._owner[resource]
                    self.statuses[owner].resources = [r for r in self.statuses[owner].resources if r != resource]
                else:
                    problem = f"is already served by driver {owner} (the first by name serves it)"
            if problem:
                if (driver, str(resource)) not in self._refused:
                    self._refused.add((driver, str(resource)))
                    log.error("driver %s: resource %r refused: it %s", driver, resource, problem)
                continue
            claimed[resource] = devices
        return claimed

    def _add_endpoint(self, driver: str, resource: str, runner: DriverRunner,
                      devices: Sequence[Device]) -> Endpoint:
        state = ResourceState(resource, driver)
        state.update(devices)
        service = DevicePluginService(state, runner, self.cdi)
        endpoint = Endpoint(
            service,
            self.settings.plugin_dir / socket_name(driver, resource),
            self.settings.kubelet_socket_path,
            self.settings.timeouts.register,
        )
        self.endpoints[resource] = endpoint
        self._owner[resource] = driver
        endpoint.start()
        return endpoint

    def _publish_cdi(self, runner: DriverRunner) -> None:
        try:
            specs = runner.call("CDI specs", runner.driver.cdi_specs, timeout=self.settings.timeouts.scan)
        except DriverCallError as exc:
            self.cdi.fail(runner.name, str(exc))
            return
        if specs:
            self.cdi.publish(runner.name, list(specs))

    # Kubelet restarts ----------------------------------------------------------------

    def _on_created(self, path: Path) -> None:
        if path == self.settings.kubelet_socket_path.absolute():
            self._kubelet_started()
        elif path == self.settings.plugin_dir.absolute():
            log.warning("plugin dir %s is back; serving again", path)
            self._watcher.restart()
            for endpoint in list(self.endpoints.values()):
                endpoint.check()

    def _on_deleted(self, path: Path) -> None:
        if path.parent == self.settings.plugin_dir.absolute() and path.name.startswith(SOCKET_PREFIX):
            with self._lock:
                endpoint = next((e for e in self.endpoints.values() if e.socket_path.absolute() == path), None)
            if endpoint is not None:
                endpoint.socket_deleted()
        elif path == self.settings.plugin_dir.absolute():
            log.warning("plugin dir %s was removed; waiting for it to come back", path)

    def _kubelet_started(self) -> None:
        log.info("kubelet socket %s created: registering again", self.settings.kubelet_socket_path)
        with self._lock:
            endpoints = list(self.endpoints.values())
        for endpoint in endpoints:
            endpoint.kubelet_started()

    def _safety_net(self) -> None:
        """Catch what file events missed: a new kubelet.sock, a socket of ours gone."""
        while not self._stopped.wait(SAFETY_NET_S):
            with self._lock:
                endpoints = list(self.endpoints.values())
            for endpoint in endpoints:
                endpoint.check()

    # Stopping ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every endpoint and driver and remove our sockets (no withdrawal:
        a restarting host should not drop the node's capacity to zero)."""
        self._stopped.set()
        self._watcher.stop()
        with self._lock:
            endpoints = list(self.endpoints.values())
            runners = list(self.runners.values())
            self.endpoints.clear()
            self._owner.clear()
        for endpoint in endpoints:
            endpoint.stop(withdraw=False)
        for runner in runners:
            runner.stop()
        self.factory.cleanup()
