"""The host: which drivers run here, and their lifecycle.

Drivers are selected (``--drivers``), enabled (node label, else config),
created and run each in isolation; their scans feed the resource table
(:mod:`multidp.host.table`), which keeps one endpoint per resource. SIGHUP reloads
every driver; a node label change starts or stops one driver, or rebuilds one
whose per-node config it selects (:mod:`multidp.host.nodestate`), without touching
the others. A driver whose creation fails is tried again with growing delays
(:mod:`multidp.host.retry`). Kubelet restarts are followed by :mod:`multidp.host.restarts`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multidp.config.settings import Settings
from multidp.host.nodestate import NodeState
from multidp.host.plugindir import InstanceLock, claim_plugin_dir
from multidp.host.restarts import KubeletRestarts
from multidp.host.retry import Retries, describe_plan, failed_status, not_retried
from multidp.host.table import ResourceTable
from multidp.model import Device
from multidp.plugins.factory import (
    DISABLED,
    FAILED,
    NOT_SELECTED,
    RUNNING,
    DriverFactory,
    DriverStatus,
    describe_failure,
    selected_names,
)
from multidp.plugins.registry import PluginRegistry
from multidp.plugins.runner import DriverRunner
from multidp.serving.cdi import CDIRegistry
from multidp.serving.endpoint import Endpoint

if TYPE_CHECKING:
    from multidp.dra.frontends import DraFrontends
    from multidp.host.labels import NodeLabelWatcher

log = logging.getLogger(__name__)

LABELS_FIRST_WAIT_S = 2.0


class Host:
    """One multidp process's worth of drivers and endpoints.

    ``retry_delays`` (first, longest) bound the delays between tries of a driver whose creation
    failed; by default the config's ``driverRetry``.
    """

    def __init__(self, settings: Settings, registry: PluginRegistry, environ: Mapping[str, str] | None = None,
                 workdir: Path | None = None, retry_delays: tuple[float, float] | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.factory = DriverFactory(settings, registry, environ, workdir)
        self.cdi = CDIRegistry(settings.cdi_dir)
        self.table = ResourceTable(settings, self.cdi)
        self._dra: DraFrontends | None = None  # drivers with frontend: dra (imported only when one is)
        self.statuses: dict[str, DriverStatus] = {}
        self.runners: dict[str, DriverRunner] = {}
        self._lock = threading.RLock()
        self._stopped = threading.Event()
        self._started = False
        self.node = NodeState()  # this node's labels and what they say about each driver
        self.factory.running_configs = self.node.per_node  # a label naming no config keeps these
        self._label_watcher: NodeLabelWatcher | None = None
        self._labels_seen = threading.Event()
        self._apply_lock = threading.Lock()  # start, reload and label changes, one at a time
        self._restarts = KubeletRestarts(settings, self.table)
        retry = settings.driver_retry
        self.retries = Retries(self._retry, *(retry_delays or (retry.first, retry.max)))
        self.instance_lock = InstanceLock(settings.plugin_dir, self.factory.environ)  # one multidp per plugin dir

    @property
    def dra(self) -> DraFrontends:
        """The DRA front-ends; the DRA package is imported the first time a driver needs it."""
        if self._dra is None:
            from multidp.dra.frontends import DraFrontends

            self._dra = DraFrontends(self.settings, self.cdi, self.factory.environ)
        return self._dra

    def dra_frontends(self) -> list[Any]:
        """The drivers served through DRA now (none, and nothing imported, on a device-plugin-only host)."""
        return self._dra.all() if self._dra is not None else []

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        return self.table.endpoints

    @property
    def started(self) -> bool:
        return self._started

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    # Starting -----------------------------------------------------------------

    def start(self) -> None:
        """Bring up every selected, enabled driver; raises UnknownDrivers for a bad --drivers."""
        names = selected_names(self.settings, self.registry)
        if not claim_plugin_dir(self.settings, names, self.instance_lock, self._stopped):
            return  # stopped (SIGTERM) while another multidp held the plugin dir: nothing touched
        self._restarts.start()
        self._follow_node_labels()
        for name in self.registry.names:
            if name not in names:
                self.statuses[name] = DriverStatus(name, self.factory.info(name).origin, NOT_SELECTED,
                                                   "not in --drivers")
        with self._apply_lock:
            self._in_parallel(self._bring_up, names)
            self._started = True
        if not self.endpoints and not self.dra_frontends():
            log.warning("nothing to serve yet: no enabled driver found devices; waiting for changes")

    @staticmethod
    def _in_parallel(step: Callable[[str], None], names: Sequence[str]) -> None:
        threads = [threading.Thread(target=step, args=(n,), name=f"driver-{n}") for n in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _desired(self, name: str) -> tuple[bool, str]:
        return self.node.desired(name, self.factory)

    def _bring_up(self, name: str, retry: bool = False) -> None:
        """Create and start one driver (again, on reload or as a retry); a failure stays with it,
        and is tried again later unless it cannot fix itself (:mod:`multidp.host.retry`)."""
        origin = self.factory.info(name).origin
        previous = self.runners.get(name)
        self.retries.begin(name, fresh=not retry)
        try:
            enabled, why_not = self._desired(name)
            if enabled:
                self.retries.attempted(name)
                self.node.tried(name, self.factory)
            created = self.factory.create_selected(name) if enabled else None
        except Exception as exc:  # noqa: BLE001 - any failure of one driver stays with it
            self._failed(name, exc, previous is not None)
            return
        if created is None:
            log.info("driver %s (%s): %s", name, origin, why_not)
            self._retire(name)
            self.retries.forget(name)
            self.statuses[name] = DriverStatus(name, origin, DISABLED, why_not)
            return
        origin = self.factory.info(name).origin
        selected = self.node.built(name, created.selection, created.frontend)
        runner = DriverRunner(name, created.driver, self.settings.timeouts, self._on_inventory)
        with self._lock:
            stopping = self._stopped.is_set()  # SIGTERM while this driver was being created
            if not stopping:
                self.runners[name] = runner
                self.statuses[name] = DriverStatus(name, origin, RUNNING, selected)
        if stopping:
            runner.stop()
            return
        # Outside the lock (withdrawing may wait on the kubelet or the API server); the runner reports
        # nothing before scan_now below.
        self._front(name, created.frontend, created.dra_name, runner)
        if previous is not None:
            previous.stop()
        tries = self.retries.succeeded(name)
        log.info("driver %s (%s) running%s", name, origin, f" after {tries} attempts" if tries > 1 else "")
        runner.scan_now()
        runner.start()

    def _front(self, name: str, frontend: str, dra_name: str, runner: DriverRunner) -> None:
        """Serve the driver's devices through its front-end, withdrawing them from the other one."""
        if frontend == "dra":
            self.table.withdraw(self.table.resources_of(name), wait=True)
            self.dra.bind(name, dra_name, runner)
        else:
            if self._dra is not None or (self.settings.dra_plugins_dir / dra_name).is_dir():  # DRA served it before
                self.dra.leave(name, dra_name, "it is served through the device plugin now")
            self.table.rebind(name, runner)

    def _retire(self, name: str) -> None:
        """Stop a driver that no longer runs here; withdraw its resources."""
        with self._lock:
            runner = self.runners.pop(name, None)
        self.node.forget(name)
        if runner is None:
            return
        self.table.withdraw(self.table.resources_of(name))
        if self._dra is not None:
            self._dra.retire(name)
        runner.stop()

    def reload(self, settings: Settings) -> None:
        """Apply a new config (SIGHUP): every driver is created again and rescanned. The plugin dir
        and kubelet socket stay as they were; a driver whose new config is bad keeps its old one."""
        old, kept = self.settings, ("plugin_dir", "kubelet_socket", "simulate", "lock_wait", "dra_plugins_dir",
                                "dra_registry_dir", "boot_id_file", "pod_resources_socket")  # take a restart
        if changed := [key for key in kept if getattr(settings, key) != getattr(old, key)]:
            log.warning("reload: %s changed but takes a restart; kept as it was", ", ".join(changed))
        for key in kept:
            setattr(settings, key, getattr(old, key))
        self.retries.set_delays(settings.driver_retry.first, settings.driver_retry.max)
        self.settings = settings
        factory = self.factory.successor(settings)
        factory.labels, factory.running_configs = self.node.labels, self.node.per_node  # before a retry uses it
        self.factory = factory
        self.table.use_settings(settings)
        if self._dra is not None:
            self._dra.settings = settings  # timeouts for DRA front-ends made from now on
        self.cdi.directory = settings.cdi_dir
        names = selected_names(settings, self.registry)
        with self._apply_lock:
            self.factory.labels = self.node.labels  # a label change may have come in meanwhile
            for name in dict.fromkeys([*self.runners, *(s.name for s in self.failed_drivers)]):
                if name not in names:
                    self._retire(name)
                    self.retries.forget(name)
                    self.statuses[name] = DriverStatus(name, self.factory.info(name).origin, NOT_SELECTED,
                                                       "not in --drivers")
            self._in_parallel(self._bring_up, names)

    # Node labels ----------------------------------------------------------------------

    def _follow_node_labels(self) -> None:
        """With NODE_NAME set, follow this node's labels (waiting briefly for the first answer,
        so a driver a label turns off is never started)."""
        node = self.factory.environ.get("NODE_NAME")
        if not node:
            return
        from multidp.host.labels import NodeLabelWatcher

        watcher = NodeLabelWatcher(node, self.apply_labels, self.factory.environ)
        if watcher.start():
            self._label_watcher = watcher
            if not self._labels_seen.wait(LABELS_FIRST_WAIT_S):
                log.warning("node labels not read within %g s; starting with the config defaults",
                            LABELS_FIRST_WAIT_S)

    def apply_labels(self, labels: Mapping[str, str]) -> None:
        """This node's labels changed: start or stop the drivers whose ``multidp.io/<driver>`` label
        changed what they should do, and rebuild, as a reload does, those whose per-node config did."""
        with self._apply_lock:
            names = selected_names(self.settings, self.registry)
            self.node.update(labels, names)
            self.factory.labels = self.node.labels
            self._labels_seen.set()
            if not self._started or self._stopped.is_set():
                return  # start() brings drivers up with these labels
            desired = {n: self._desired(n) for n in names}  # (run it?, why not)
            # A failed driver is tried at once only when the labels now select another per-node config:
            # otherwise it keeps to its delays (or, not retried, waits for a config change), as labels
            # and annotations change often (a timestamp every minute on some nodes).
            starting = [n for n in names if desired[n][0] and n not in self.runners
                        and (not self._failed_here(n) or self.node.try_would_differ(n, self.factory))]
            stopping = [n for n in names if not desired[n][0] and (n in self.runners or self._failed_here(n))]
            staying = [n for n in names if n in self.runners and n not in stopping]
            rebuilding = [n for n in staying if self.node.config_changed(n, self.factory)]
            for name in stopping:
                reason = desired[name][1]
                log.info("driver %s: %s; stopping it", name, reason)
                self._retire(name)
                self.retries.forget(name)
                self.statuses[name] = DriverStatus(name, self.factory.info(name).origin, DISABLED, reason)
            for name in rebuilding:
                log.info("driver %s: its per-node config or front-end changed; creating it again", name)
            for name in staying:
                if name not in rebuilding:  # same config, but say so when the label value changed
                    self.statuses[name].reason = self.node.note(name, self.node.selection(name, self.factory))
            self._in_parallel(self._bring_up, starting + rebuilding)

    def _failed(self, name: str, exc: Exception, keeping: bool) -> None:
        """Creating a driver raised: log it (a reason seen the try before at DEBUG only), record
        it, and plan the next try. ``keeping``: its previous instance runs on meanwhile."""
        origin, reason = self.factory.info(name).origin, describe_failure(exc)
        failure = self.retries.failed(name, reason, retry=not_retried(exc) is None)
        level = logging.DEBUG if failure.repeated else logging.ERROR
        plan = describe_plan(failure, exc)
        if keeping:
            self.node.refused[name] = reason
            log.log(level, "driver %s: %s; keeping it running as it was, %s", name, reason, plan)
            return
        log.log(level, "driver %s (%s) failed: %s; %s", name, origin, reason, plan)
        with self._lock:
            self.statuses[name] = failed_status(name, origin, reason, failure)
        self._unprepare_only(name, f"it failed to start: {reason}")

    def _unprepare_only(self, name: str, reason: str) -> None:
        """A DRA driver that cannot run still answers Unprepare for the claims its checkpoint holds."""
        try:
            resolved = self.factory.resolved(name)
        except Exception:  # noqa: BLE001 - a config that does not resolve names no DRA driver to serve
            return
        if resolved.frontend == "dra":
            self.dra.orphan(name, resolved.dra_name, reason)

    def _retry(self, name: str, token: int) -> None:
        """A planned try came due (on the retry timer's thread): bring the driver up again, unless
        the host stopped or another bring-up ran since the try was planned."""
        with self._apply_lock:
            if not self._stopped.is_set() and self.retries.is_current(name, token):
                self._bring_up(name, retry=True)

    def _failed_here(self, name: str) -> bool:
        return getattr(self.statuses.get(name), "state", None) == FAILED

    @property
    def failed_drivers(self) -> list[DriverStatus]:
        return [s for s in self.statuses.values() if s.state == FAILED]

    def _on_inventory(self, runner: DriverRunner, inventory: Mapping[str, Sequence[Device]] | None,
                      error: str) -> None:
        with self._lock:
            current = self.runners.get(runner.name) is runner and not self._stopped.is_set()
        dra = self._dra
        if current and dra is not None and dra.serves(runner.name):
            dra.report(runner, inventory, error)
        elif current:  # not a late report from a runner that was replaced
            if inventory is not None and dra is not None:  # devices DRA claims still hold stay Unhealthy here
                inventory = dra.mark_held(runner.name, inventory)
            self.table.report(runner, inventory, error)

    # Stopping ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every endpoint and driver and remove our sockets (no withdrawal:
        a restarting host should not drop the node's capacity to zero)."""
        self._stopped.set()
        self.retries.close()
        self._restarts.stop()
        if self._label_watcher is not None:
            self._label_watcher.stop()
        with self._lock:
            runners = list(self.runners.values())
        self.table.stop_all()
        if self._dra is not None:
            self._dra.stop_all()
        for runner in runners:
            runner.stop()
        self.factory.cleanup()
        self.instance_lock.release()  # last, once our sockets are gone: the next multidp may take over
