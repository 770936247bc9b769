"""Scan → diff → one server per resource: the table of resources and their endpoints.

In the manner of Intel's device-plugin framework, each driver's scan results
come here. A new resource gets an endpoint (served, then registered), a known
one an updated snapshot, and one that went away is withdrawn: an empty list
first, so the kubelet drops its capacity at once, then the server stops.

A driver's CDI specs are written before its first endpoints exist, after each scan
that changed something, and after every scan while they could not be written; while
they cannot, the devices that name CDI devices are advertised Unhealthy with the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from multidp.config.settings import Settings
from multidp.model import Device
from multidp.names import resource_name_problem
from multidp.plugins.runner import DriverRunner
from multidp.serving.cdi import CDIRegistry
from multidp.serving.cdipublish import publish_driver_specs
from multidp.serving.endpoint import Endpoint
from multidp.serving.eventloop import ServingLoop
from multidp.serving.registration import KubeletClient
from multidp.serving.resource import ResourceState
from multidp.serving.service import DevicePluginService
from multidp.serving.sockets import socket_name

log = logging.getLogger(__name__)

class ResourceTable:
    """Every resource this host serves, which driver owns it, and its endpoint."""

    def __init__(self, settings: Settings, cdi: CDIRegistry) -> None:
        self.settings = settings
        self.cdi = cdi
        self.endpoints: dict[str, Endpoint] = {}
        self._owner: dict[str, str] = {}  # resource -> driver
        self._refused: set[tuple[str, str]] = set()
        self._cdi_runner: dict[str, DriverRunner] = {}  # driver -> the runner whose CDI specs were last tried
        self._lock = threading.RLock()
        self._closed = False  # stop_all ran
        # One event loop for every endpoint's gRPC servers: idle, it sleeps however many there are.
        self._loop = ServingLoop.shared()
        self.kubelet = KubeletClient(settings.kubelet_socket_path, settings.timeouts.register)
        cdi.subscribe(self._cdi_changed)

    def use_settings(self, settings: Settings) -> None:
        """New settings after a reload: timeouts for registrations and new endpoints from now on."""
        self.settings = settings
        self.kubelet.timeout = settings.timeouts.register

    def all(self) -> list[Endpoint]:
        with self._lock:
            return list(self.endpoints.values())

    def resources_of(self, driver: str) -> list[str]:
        with self._lock:
            return sorted(r for r, d in self._owner.items() if d == driver)

    def endpoint_at(self, socket: Path) -> Endpoint | None:
        with self._lock:
            return next((e for e in self.endpoints.values() if e.socket_path.absolute() == socket), None)

    def rebind(self, driver: str, runner: DriverRunner) -> None:
        """Point a driver's endpoints at its new runner (after a reload)."""
        with self._lock:
            for resource in self.resources_of(driver):
                self.endpoints[resource].rebind(runner)

    def report(self, runner: DriverRunner, inventory: Mapping[str, Sequence[Device]] | None, error: str) -> None:
        """Apply one scan of ``runner``'s driver (``inventory`` None: the scan failed with ``error``)."""
        driver = runner.name
        # A driver's (or a reload's) first specs go before its endpoints exist: their first
        # list already says which devices a missing spec makes unusable.
        first = inventory is not None and self._cdi_runner.get(driver) is not runner and not self._closed
        if first:
            self._publish_cdi(runner)
        changed = False
        with self._lock:
            if self._closed:
                return  # a scan that finished while the host stopped: no endpoint after stop_all
            owned = self.resources_of(driver)
            if inventory is None:
                for resource in owned:
                    self.endpoints[resource].mark_unhealthy(error)
                return
            claimed = self._claims(driver, inventory)
            for resource, devices in claimed.items():
                endpoint = self.endpoints.get(resource)
                if endpoint is None:
                    self._add(driver, resource, runner, devices)
                    changed = True
                else:
                    changed |= endpoint.update(devices)
            gone = [r for r in owned if r not in claimed]
        if gone:
            log.info("driver %s no longer reports %s", driver, ", ".join(gone))
            self.withdraw(gone)
        if not first and (changed or gone or self.cdi.error(driver) is not None):
            self._publish_cdi(runner)

    def _claims(self, driver: str, inventory: Mapping[str, Sequence[Device]]) -> dict[str, Sequence[Device]]:
        """The resources ``driver`` may serve. Two drivers claiming one resource:
        the first by name serves it, taking it over if the other got there first."""
        claimed: dict[str, Sequence[Device]] = {}
        for resource, devices in inventory.items():
            if isinstance(resource, str):
                name_problem = resource_name_problem(resource)
                problem = f"it is not an extended resource name: {name_problem}" if name_problem else None
            else:
                problem = f"its name is a {type(resource).__name__}, not a string"
            owner = self._owner.get(resource)
            if problem is None and owner is not None and owner != driver:
                if driver < owner:
                    log.error("resource %s: driver %s takes it over from driver %s (the first by name serves it)",
                              resource, driver, owner)
                    # Stopped before the new endpoint registers: a stream of the old one
                    # ending after that could knock out the new one (kubernetes#121994).
                    self.endpoints.pop(resource).stop(withdraw=False)
                    del self._owner[resource]
                else:
                    problem = f"it is already served by driver {owner} (the first by name serves it)"
            if problem:
                if (driver, str(resource)) not in self._refused:
                    self._refused.add((driver, str(resource)))
                    log.error("driver %s: resource %r refused: %s", driver, resource, problem)
                continue
            claimed[resource] = devices
        return claimed

    def _add(self, driver: str, resource: str, runner: DriverRunner, devices: Sequence[Device]) -> None:
        state = ResourceState(resource, driver)
        state.use_cdi_problem(self.cdi.error(driver))
        state.update(devices)
        endpoint = Endpoint(
            DevicePluginService(state, runner, self.cdi),
            self.settings.plugin_dir / socket_name(driver, resource),
            self.kubelet,
            self._loop,
        )
        self.endpoints[resource] = endpoint
        self._owner[resource] = driver
        endpoint.start()

    def _publish_cdi(self, runner: DriverRunner) -> None:
        self._cdi_runner[runner.name] = runner
        publish_driver_specs(runner, self.cdi, self.settings.timeouts.scan)

    def _cdi_changed(self, driver: str) -> None:
        """The driver's CDI specs failed or are written again: its devices that name CDI devices follow."""
        while True:  # until it holds still: a change racing this one is not undone by it
            problem = self.cdi.error(driver)
            with self._lock:
                states = [self.endpoints[r].service.state for r in self.resources_of(driver)]
            for state in states:
                state.use_cdi_problem(problem)
            if self.cdi.error(driver) == problem:
                return

    def withdraw(self, resources: Sequence[str], wait: bool = False) -> None:
        """Stop serving ``resources``: empty list first, then the server stops (in the background, unless
        ``wait``: a driver moving to DRA must be gone from the kubelet's list before DRA offers its devices)."""
        with self._lock:
            endpoints = [self.endpoints.pop(r) for r in resources if r in self.endpoints]
            for resource in resources:
                self._owner.pop(resource, None)
        threads = []
        for endpoint in endpoints:
            log.info("withdrawing resource %s", endpoint.resource)
            threads.append(threading.Thread(target=endpoint.stop, args=(True,), name="withdraw", daemon=True))
            threads[-1].start()
        for thread in threads if wait else ():
            thread.join()

    def stop_all(self) -> None:
        """Stop every endpoint without withdrawing (a restarting host keeps the node's capacity)."""
        with self._lock:
            self._closed = True
            endpoints = list(self.endpoints.values())
            self.endpoints.clear()
            self._owner.clear()
        for endpoint in endpoints:
            endpoint.stop(withdraw=False)
        self.kubelet.close()  # the loop is the process's, and stays (see multidp.serving.eventloop)
