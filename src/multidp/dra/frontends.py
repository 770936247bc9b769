"""Every driver this host serves through DRA, by driver name: the host's view of the DRA front-end.

A runner's first good scan writes its CDI specs; the front-end's sockets start with its first scan
(or at once when its checkpoint holds claims, so that they can be unprepared even if scans fail).
Later scans update devices and health, and CDI specs are written again after changes and while they
failed (as for device plugins). A driver that stops with claims prepared keeps its sockets for
Unprepare until the last claim goes (:meth:`DraFrontends.retire`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from multidp.config.settings import Settings
from multidp.dra.checkpoint import Checkpoint, CheckpointCorrupt
from multidp.dra.frontend import DraFrontend, node_name
from multidp.dra.slices import SlicePublisher
from multidp.dra.usable import mark_held, usable
from multidp.kubeapi import LazyClient
from multidp.model import Device
from multidp.plugins.runner import DriverRunner
from multidp.serving.cdi import CDIRegistry
from multidp.serving.cdipublish import publish_driver_specs

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
        """Whether ``driver``'s scans belong here (a front-end kept only for Unprepare takes none)."""
        with self._lock:
            frontend = self._frontends.get(driver)
        return frontend is not None and frontend.preparer.runner is not None

    def bind(self, driver: str, dra_name: str, runner: DriverRunner) -> None:
        """Serve ``driver`` as ``dra_name`` with ``runner`` (a new runner of the same name keeps the sockets).
        A new DRA name waits while claims are prepared under the old one: their pods could not terminate."""
        with self._lock:
            current = self._frontends.get(driver)
        if current is not None and current.dra_name != dra_name and current.preparer.claims:
            self._once(driver, f"draDriverName {dra_name!r} waits: {len(current.preparer.claims)} claims are "
                               f"prepared as {current.dra_name!r}; serving that name until they are unprepared")
            dra_name = current.dra_name
        if current is not None and current.dra_name == dra_name:
            current.rebind(runner, self.settings.timeouts.allocate)
            return
        if current is not None:
            self._drop(driver, current)
        frontend = DraFrontend(driver, dra_name, runner, self.settings, self.cdi, self.environ)
        with self._lock:
            self._frontends[driver] = frontend

    def report(self, runner: DriverRunner, inventory: Mapping[str, Sequence[Device]] | None, error: str) -> None:
        with self._lock:
            frontend = None if self._closed else self._frontends.get(runner.name)
            first = frontend is not None and inventory is not None and self._published.get(runner.name) is not runner
            if first:
                self._published[runner.name] = runner
        if frontend is None or frontend.preparer.runner is not runner:
            return  # a late report of a runner that was replaced or stopped
        if first:
            publish_driver_specs(runner, self.cdi, self.settings.timeouts.scan)
        if inventory is not None:
            inventory = usable(runner.name, inventory, self.cdi.error(runner.name), self._once)
        changed = frontend.report(inventory, error)
        if inventory is not None or frontend.preparer.claims:
            self._start(runner.name, frontend)
        if not first and inventory is not None and (changed or self.cdi.error(runner.name) is not None):
            publish_driver_specs(runner, self.cdi, self.settings.timeouts.scan)

    def _start(self, driver: str, frontend: DraFrontend) -> None:
        with self._lock:
            if driver in self._started or self._frontends.get(driver) is not frontend:
                return
            self._started.add(driver)
        try:
            frontend.start()
        except Exception as exc:  # noqa: BLE001 - a socket that cannot be served: said, and tried next scan
            with self._lock:
                self._started.discard(driver)
            self._once(driver, f"cannot serve DRA on {frontend.socket_path} and {frontend.registration_path}: "
                               f"{type(exc).__name__}: {exc}; tried again after each scan")

    def mark_held(self, driver: str, inventory: Mapping[str, Sequence[Device]]) -> Mapping[str, Sequence[Device]]:
        """For the device-plugin path: devices that DRA claims still hold, Unhealthy until unprepared."""
        with self._lock:
            frontend = self._frontends.get(driver)
        if frontend is None or not frontend.preparer.claims:
            return inventory
        return mark_held(inventory, frontend.preparer.claims)

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

    def leave(self, driver: str, dra_name: str, reason: str) -> None:
        """``driver`` is served through the device plugin (now, or since this host started). Claims prepared
        through DRA before keep an Unprepare-only front-end (its slices go); slices an earlier run of DRA on
        this node left behind go too (its folder says there was one)."""
        self.retire(driver, reason)
        self.orphan(driver, dra_name, reason)
        with self._lock:
            kept = driver in self._frontends
        folder = self.settings.dra_plugins_dir / dra_name
        if not kept and folder.is_dir() and self.environ.get("NODE_NAME"):
            threading.Thread(target=self._clear, args=(driver, dra_name, folder), name=f"{driver}-slices-clear",
                             daemon=True).start()

    def _clear(self, driver: str, dra_name: str, folder: Path) -> None:
        SlicePublisher(driver, dra_name, node_name(self.environ), LazyClient(self.environ), list).stop(withdraw=True)
        checkpoint = Checkpoint(folder / "checkpoint.json")
        try:
            if not checkpoint.load().claims:
                checkpoint.path.unlink(missing_ok=True)
                folder.rmdir()  # DRA left no trace here: the next start need not look again
        except (CheckpointCorrupt, OSError):
            pass  # kept: a later start tries again

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
        frontend.orphan(reason)
        self._start(driver, frontend)
        self._keep_for_unprepare(driver, frontend, reason)

    def _keep_for_unprepare(self, driver: str, frontend: DraFrontend, reason: str) -> None:
        frontend.orphan(reason)
        frontend.preparer.on_empty = lambda: self._drop_if_orphan(driver, frontend)
        log.warning("driver %s: %s, with %d claims prepared; its DRA socket stays for NodeUnprepareResources "
                    "(Prepare is refused) until they are unprepared or the driver runs again", driver, reason,
                    len(frontend.preparer.claims))

    def _drop_if_orphan(self, driver: str, frontend: DraFrontend) -> None:
        threading.Thread(target=self._drop, args=(driver, frontend, True, True), name="dra-drop", daemon=True).start()

    def _drop(self, driver: str, frontend: DraFrontend, withdraw: bool = True, only_orphan: bool = False) -> None:
        with self._lock:
            if self._frontends.get(driver) is not frontend:
                return
            if only_orphan and (frontend.preparer.runner is not None or frontend.preparer.claims):
                return  # the driver came back (or a claim was prepared) meanwhile: it serves on
            del self._frontends[driver]
            self._started.discard(driver)
            self._published.pop(driver, None)
        frontend.stop(withdraw)

    def _once(self, driver: str, message: str) -> None:
        if (driver, message) not in self._logged:
            self._logged.add((driver, message))
            log.error("driver %s: %s", driver, message)

    def stop_all(self) -> None:
        """The host stops: every socket goes (a restarting host serves its claims again from the checkpoint)."""
        with self._lock:
            self._closed = True
            frontends = list(self._frontends.items())
        for driver, frontend in frontends:
            self._drop(driver, frontend, withdraw=False)
