"""Every driver this host serves through DRA, by driver name: the host's view of the DRA front-end.

A driver's first scan publishes its CDI specs, then starts its sockets; later scans update devices and
health, and CDI specs are written again after changes and while they failed (as for device plugins).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

from multidp.config.settings import Settings
from multidp.dra.frontend import DraFrontend
from multidp.model import Device
from multidp.names import resource_name_problem
from multidp.plugins.runner import DriverRunner
from multidp.serving.cdi import CDIRegistry
from multidp.serving.cdipublish import publish_driver_specs
from multidp.serving.devicecheck import as_list, device_problem, label
from multidp.serving.resource import cdi_marked

log = logging.getLogger(__name__)


class DraFrontends:
    """The DRA front-ends of one host."""

    def __init__(self, settings: Settings, cdi: CDIRegistry, environ: Mapping[str, str]) -> None:
        self.settings, self.cdi, self.environ = settings, cdi, environ
        self._lock = threading.Lock()
        self._frontends: dict[str, DraFrontend] = {}
        self._started: set[str] = set()
        self._closed = False
        self._logged: set[tuple[str, str]] = set()

    def all(self) -> list[DraFrontend]:
        with self._lock:
            return list(self._frontends.values())

    def serves(self, driver: str) -> bool:
        with self._lock:
            return driver in self._frontends

    def bind(self, driver: str, dra_name: str, runner: DriverRunner) -> None:
        """Serve ``driver`` as ``dra_name`` with ``runner`` (a new runner of the same name keeps the sockets)."""
        with self._lock:
            current = self._frontends.get(driver)
            if current is not None and current.dra_name == dra_name:
                current.rebind(runner)
                return
        if current is not None:
            self.retire(driver)
        frontend = DraFrontend(driver, dra_name, runner, self.settings, self.cdi, self.environ)
        with self._lock:
            self._frontends[driver] = frontend

    def report(self, runner: DriverRunner, inventory: Mapping[str, Sequence[Device]] | None, error: str) -> None:
        with self._lock:
            frontend = None if self._closed else self._frontends.get(runner.name)
            first = frontend is not None and inventory is not None and runner.name not in self._started
            if first:
                self._started.add(runner.name)
        if frontend is None:
            return
        if first:
            publish_driver_specs(runner, self.cdi, self.settings.timeouts.scan)
        if inventory is not None:
            inventory = self._usable(runner.name, inventory)
        changed = frontend.report(inventory, error)
        if first:
            frontend.start()
        elif inventory is not None and (changed or self.cdi.error(runner.name) is not None):
            publish_driver_specs(runner, self.cdi, self.settings.timeouts.scan)

    def _usable(self, driver: str, inventory: Mapping[str, Sequence[Device]]) -> dict[str, Sequence[Device]]:
        """The scan with what the host cannot offer left out (logged once each, as for device plugins),
        and, while the driver's CDI specs cannot be written, its devices that need them Unhealthy."""
        usable: dict[str, Sequence[Device]] = {}
        problem = self.cdi.error(driver)
        for resource, devices in inventory.items():
            why = (resource_name_problem(resource) if isinstance(resource, str)
                   else f"its name is a {type(resource).__name__}, not a string")
            items = as_list(devices)
            if why is None and items is None:
                why = f"its devices are a {type(devices).__name__}, not a list"
            if why is not None or items is None:
                self._once(driver, f"resource {resource!r} left out: {why}")
                continue
            seen: set[str] = set()
            kept: list[object] = []
            for device in items:
                if (bad := device_problem(device, seen)) is not None:
                    self._once(driver, f"resource {resource}: device {label(device)} left out: it {bad}")
                    continue
                seen.add(device.id)  # type: ignore[attr-defined]
                kept.append(device)
            usable[resource] = [d for d in (cdi_marked(kept, problem) if problem else kept)
                                if isinstance(d, Device)]
        return usable

    def _once(self, driver: str, message: str) -> None:
        if (driver, message) not in self._logged:
            self._logged.add((driver, message))
            log.error("driver %s: %s", driver, message)

    def retire(self, driver: str) -> None:
        """Stop serving ``driver`` through DRA (its prepared claims stay in its checkpoint)."""
        with self._lock:
            frontend = self._frontends.pop(driver, None)
            started = driver in self._started
            self._started.discard(driver)
        if frontend is not None and started:
            frontend.stop()

    def stop_all(self) -> None:
        with self._lock:
            self._closed = True
            drivers = list(self._frontends)
        for driver in drivers:
            self.retire(driver)
