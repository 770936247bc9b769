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
        self._started: set[str] = set()  # drivers whose sockets are up
        self._published: dict[str, DriverRunner] = {}  # driver -> the runner whose CDI specs were written
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
            self._drop(driver, current)
        frontend = DraFrontend(driver, dra_name, runner, self.settings, self.cdi, self.environ)
        with self._lock:
            self._frontends[driver] = frontend

    def report(self, runner: DriverRunner, inventory: Mapping[str, Sequence[Device]] | None, error: str) -> None:
        with self._lock:
            frontend = None if self._closed else self._frontends.get(runner.name)
            # A runner's first good scan writes its CDI specs (a reload's new runner too); the sockets
            # start with the front-end's first.
            first = frontend is not None and inventory is not None and self._published.get(runner.name) is not runner
            start = first and runner.name not in self._started
            if first:
                self._published[runner.name] = runner
            if start:
                self._started.add(runner.name)
        if frontend is None or frontend.preparer.runner is not runner:
            return  # a late report of a runner that was replaced or stopped
        if first:
            publish_driver_specs(runner, self.cdi, self.settings.timeouts.scan)
        if inventory is not None:
            inventory = self._usable(runner.name, inventory)
        changed = frontend.report(inventory, error)
        if start:
            frontend.start()
        elif not first and inventory is not None and (changed or self.cdi.error(runner.name) is not None):
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

    def retire(self, driver: str, reason: str = "it was stopped") -> None:
        """Stop serving ``driver`` through DRA. With claims still prepared its sockets stay, serving
        Unprepare only, until the last claim is unprepared or the driver comes back (:meth:`bind`)."""
        with self._lock:
            frontend = self._frontends.get(driver)
            started, closed = driver in self._started, self._closed
            self._published.pop(driver, None)
        if frontend is None:
            return
        if started and not closed and frontend.preparer.claims:
            self._keep_for_unprepare(driver, frontend, reason)
            return
        self._drop(driver, frontend)

    def orphan(self, driver: str, dra_name: str, reason: str) -> None:
        """``driver`` failed to start: if its checkpoint holds prepared claims, serve Unprepare for them."""
        with self._lock:
            if self._closed or driver in self._frontends:
                return  # one runs already (an earlier instance kept after a failed reload)
        frontend = DraFrontend(driver, dra_name, None, self.settings, self.cdi, self.environ)
        if not frontend.preparer.claims:
            return
        with self._lock:
            self._frontends[driver] = frontend
            self._started.add(driver)
        frontend.start()
        self._keep_for_unprepare(driver, frontend, reason)

    def _keep_for_unprepare(self, driver: str, frontend: DraFrontend, reason: str) -> None:
        frontend.orphan(reason)
        frontend.preparer.on_empty = lambda: self._drop_if_orphan(driver, frontend)
        log.warning("driver %s: %s, with %d claims prepared; its DRA socket stays for NodeUnprepareResources "
                    "(Prepare is refused) until they are unprepared or the driver runs again", driver, reason,
                    len(frontend.preparer.claims))

    def _drop_if_orphan(self, driver: str, frontend: DraFrontend) -> None:
        if frontend.preparer.runner is None:
            threading.Thread(target=self._drop, args=(driver, frontend), name="dra-drop", daemon=True).start()

    def _drop(self, driver: str, frontend: DraFrontend, withdraw: bool = True) -> None:
        with self._lock:
            if self._frontends.get(driver) is not frontend:
                return
            del self._frontends[driver]
            started = driver in self._started
            self._started.discard(driver)
            self._published.pop(driver, None)
        if started:
            frontend.stop(withdraw)

    def stop_all(self) -> None:
        """The host stops: every socket goes (a restarting host serves its claims again from the checkpoint)."""
        with self._lock:
            self._closed = True
            frontends = list(self._frontends.items())
        for driver, frontend in frontends:
            self._drop(driver, frontend, withdraw=False)
