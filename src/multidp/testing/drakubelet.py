"""A kubelet stand-in for tests: the kubelet's DRA plugin manager, as far as a DRA driver can tell.

Like the kubelet's plugin watcher (pkg/kubelet/pluginmanager) it finds registration sockets in the
registry directory (polling every 0.1 s where the kubelet uses fsnotify; dot files are skipped), asks
GetInfo, checks the type and picks the newest DRA and health services both sides know, and answers
NotifyRegistrationStatus. A socket that cannot be reached is tried again on later polls; one that was
refused is not, until the file is replaced. Like pkg/kubelet/cm/dra/plugin it calls NodePrepareResources
/ NodeUnprepareResources (45 s, retrying while the plugin is UNAVAILABLE), keeps a checkpoint of the
prepared claims that survives :meth:`DraKubelet.restart`, and reads the health stream, each message the
full device list, every device Unknown once the stream ends.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from multidp.api import dra_v1_pb2 as dra
from multidp.api import drahealth_v1_pb2 as health_pb
from multidp.api import pluginregistration_v1_pb2 as reg
from multidp.api import services
from multidp.api.services import method_path
from multidp.testing.draview import DraCallFailed, DraPluginView, HealthEntry, PrepareAnswer, PreparedDevice

POLL_S = 0.1
GET_INFO_TIMEOUT_S = 10.0
CALL_TIMEOUT_S = 45.0  # the kubelet's deadline for NodePrepareResources / NodeUnprepareResources
MAX_HEALTH_MESSAGE_BYTES = 1024
HEALTH_NAMES = {health_pb.UNKNOWN: "Unknown", health_pb.HEALTHY: "Healthy", health_pb.UNHEALTHY: "Unhealthy"}
ClaimKey = tuple[str, str, str]  # (namespace, uid, name), as the kubelet names a claim


def _call(channel: Any, service: str, method: str, request: Any, answer: type[Any], timeout: float) -> Any:
    """One unary call by method path: every service version is called with the same message classes."""
    stub = channel.unary_unary(method_path(service, method), request_serializer=type(request).SerializeToString,
                               response_deserializer=answer.FromString)
    return stub(request, timeout=timeout)


class DraKubelet:
    """Watches ``registry_dir`` for DRA plugins and talks to them as the kubelet does; :meth:`start` it."""

    def __init__(self, registry_dir: Path) -> None:
        self.registry_dir = Path(registry_dir)
        self.plugins: dict[str, DraPluginView] = {}
        self.errors: list[str] = []
        self.registrations: list[tuple[str, tuple[str, ...]]] = []  # every GetInfo answer: (name, versions)
        self.prepared: dict[str, tuple[str, str, str]] = {}  # the checkpoint: uid -> (driver, namespace, name)
        self._health: dict[str, dict[tuple[str, str], HealthEntry]] = {}
        self._health_messages: dict[str, list[dict[tuple[str, str], HealthEntry]]] = {}
        self.scans = 0  # directory scans done (a test can wait for the next one)
        self._seen: dict[Path, int] = {}  # socket -> inode, handled (registered or refused)
        self._attempting: set[Path] = set()
        self._unreachable: set[tuple[Path, int]] = set()  # sockets whose GetInfo failed (error recorded)
        self._generation = 0  # bumped by stop / restart: late registrations of before are dropped
        self._cond = threading.Condition()
        self._stopped = threading.Event()
        self._poller: threading.Thread | None = None

    # Lifecycle ------------------------------------------------------------------------------

    def start(self) -> DraKubelet:
        """Watch the registry directory (created if missing); returns the stand-in."""
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        self._stopped.clear()
        self._poller = threading.Thread(target=self._poll, daemon=True, name="dra-kubelet-watch")
        self._poller.start()
        return self

    def stop(self) -> None:
        """Stop watching, close every connection and stream, forget registrations (not the checkpoint)."""
        self._stopped.set()
        if self._poller is not None:
            self._poller.join()
            self._poller = None
        with self._cond:
            self._generation += 1
            views = list(self.plugins.values())
            self.plugins.clear()
            self._seen.clear()
            self._cond.notify_all()
        for view in views:
            view.close()

    def restart(self) -> None:
        """A kubelet restart: connections and registrations gone, the sockets already in the directory
        found and registered again; the prepared claims stay (the kubelet's checkpoint survives)."""
        self.stop()
        self.start()

    def __enter__(self) -> DraKubelet:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # Watching the registry directory ---------------------------------------------------------

    def _poll(self) -> None:
        while not self._stopped.is_set():
            self._scan()
            self._stopped.wait(POLL_S)

    def _scan(self) -> None:
        present: dict[Path, int] = {}
        try:
            for entry in os.scandir(self.registry_dir):
                if not entry.name.startswith(".") and stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                    present[Path(entry.path)] = entry.inode()
        except OSError:
            pass  # the directory went away, or an entry vanished while listed: the next poll sees
        with self._cond:
            self.scans += 1
            for path, inode in list(self._seen.items()):
                if present.get(path) != inode:  # removed, or replaced by a new socket
                    del self._seen[path]
                    self._deregister(path)
            for path, inode in present.items():
                if path not in self._seen and path not in self._attempting:
                    self._attempting.add(path)
                    threading.Thread(target=self._attempt, args=(path, inode, self._generation), daemon=True,
                                     name=f"dra-kubelet-reg-{path.name}").start()

    def _deregister(self, socket: Path) -> None:
        for name, view in list(self.plugins.items()):
            if view.socket == socket:
                del self.plugins[name]
                view.close()
                self._mark_unknown(name)
        self._cond.notify_all()

    def _attempt(self, path: Path, inode: int, generation: int) -> None:
        handled = False
        try:
            handled = self._register(path, inode, generation)
        finally:
            with self._cond:  # one block with the discard: no newer attempt can start in between
                self._attempting.discard(path)
                try:
                    same = os.lstat(path).st_ino == inode
                except OSError:
                    same = False
                if handled and generation == self._generation:
                    if same:
                        self._seen[path] = inode
                    else:
                        self._deregister(path)  # removed or replaced meanwhile: a later poll registers anew

    def _register(self, path: Path, inode: int, generation: int) -> bool:
        """Register the plugin behind ``path``: True when done with it (registered or refused)."""
        channel = grpc.insecure_channel(f"unix:{path}", options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            try:
                info = _call(channel, services.REGISTRATION_SERVICE, "GetInfo", reg.InfoRequest(), reg.PluginInfo,
                             GET_INFO_TIMEOUT_S)
            except grpc.RpcError as exc:
                with self._cond:
                    if (path, inode) not in self._unreachable:  # said once: it is tried again every poll
                        self._unreachable.add((path, inode))
                        self.errors.append(f"GetInfo at {path} failed: {exc.code()}: {exc.details()}")
                return False
            versions = tuple(info.supported_versions)
            with self._cond:
                self.registrations.append((info.name, versions))
            problem, view = self._check(path, info, versions)
            if view is not None:
                with self._cond:
                    if generation != self._generation:
                        view.close()
                        return True  # stopped meanwhile: the next start registers it again
                    replaced = self.plugins.get(view.name)
                    if replaced is not None:
                        replaced.close()  # a rolling update: the newer registration wins
                    self.plugins[view.name] = view
                    self._cond.notify_all()
                if view.health_service is not None:
                    threading.Thread(target=self._watch_health, args=(view,), daemon=True,
                                     name=f"dra-kubelet-health-{view.name}").start()
            else:
                self._error(problem)
            try:
                _call(channel, services.REGISTRATION_SERVICE, "NotifyRegistrationStatus",
                      reg.RegistrationStatus(plugin_registered=view is not None, error=problem),
                      reg.RegistrationStatusResponse, GET_INFO_TIMEOUT_S)
            except grpc.RpcError as exc:
                self._error(f"NotifyRegistrationStatus at {path} failed: {exc.code()}: {exc.details()}")
            return True
        finally:
            channel.close()

    def _check(self, path: Path, info: Any, versions: tuple[str, ...]) -> tuple[str, DraPluginView | None]:
        """The kubelet's checks of a GetInfo answer: a problem, or the view of the plugin to register."""
        if info.type != services.DRA_PLUGIN_TYPE:
            return f"no handler registered for plugin type: {info.type!r} at socket {path}", None
        if not info.name:
            return f"plugin at socket {path} has an empty name", None
        dra_service = next((s for s in services.DRA_SERVICES if s in versions), None)
        if dra_service is None:
            return (f"none of the supported versions {list(versions)} is supported by this kubelet: "
                    f"{list(services.DRA_SERVICES)}"), None
        health_service = next((s for s in services.HEALTH_SERVICES if s in versions), None)
        endpoint = info.endpoint or str(path)
        channel = grpc.insecure_channel(f"unix:{endpoint}", options=[("grpc.use_local_subchannel_pool", 1)])
        return "", DraPluginView(info.name, endpoint, path, dra_service, health_service, time.monotonic(), channel)

    def _error(self, message: str) -> None:
        with self._cond:
            self.errors.append(message)
            self._cond.notify_all()

    # Waiting ---------------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        """Wait until ``predicate()`` holds (checked under the stand-in's lock); AssertionError after ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def wait_registered(self, driver_name: str, timeout: float = 10.0) -> DraPluginView:
        """Wait until ``driver_name`` is registered; its view."""
        self.wait_for(lambda: driver_name in self.plugins, timeout, f"DRA driver {driver_name} registered")
        return self.plugins[driver_name]

    # Prepare and unprepare -------------------------------------------------------------------

    def _driver_call(self, driver_name: str, method: str, request: Any, answer: type[Any], timeout: float) -> Any:
        """Call ``driver_name``'s DRA service; retried while UNAVAILABLE (restarting) until ``timeout``."""
        deadline, backoff = time.monotonic() + timeout, 0.05
        while True:
            with self._cond:
                view = self.plugins.get(driver_name)
            if view is None:
                raise DraCallFailed(None, f"DRA driver {driver_name} is not registered")
            try:
                return _call(view.channel, view.dra_service, method, request, answer,
                             max(deadline - time.monotonic(), 0.001))
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() + backoff >= deadline:
                    raise DraCallFailed(exc.code(), exc.details()) from exc
            except ValueError:  # the channel was closed: the plugin registered again meanwhile
                if time.monotonic() + backoff >= deadline:
                    raise DraCallFailed(None, f"DRA driver {driver_name}: connection closed") from None
            time.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def prepare(self, driver_name: str, claims: list[ClaimKey],
                timeout: float = CALL_TIMEOUT_S) -> dict[str, PrepareAnswer]:
        """NodePrepareResources for ``claims``: the answer per claim uid; prepared claims are checkpointed."""
        request = dra.NodePrepareResourcesRequest(claims=[dra.Claim(namespace=ns, uid=uid, name=name)
                                                          for ns, uid, name in claims])
        response = self._driver_call(driver_name, services.PREPARE, request, dra.NodePrepareResourcesResponse, timeout)
        answers: dict[str, PrepareAnswer] = {}
        for namespace, uid, name in claims:
            if uid not in response.claims:
                answers[uid] = PrepareAnswer([], f"plugin answered no result for claim {uid}")
                continue
            got = response.claims[uid]
            answers[uid] = PrepareAnswer([PreparedDevice.from_wire(d) for d in got.devices], got.error)
            if not got.error:
                with self._cond:
                    self.prepared[uid] = (driver_name, namespace, name)
        self._note_unasked(driver_name, response.claims, claims)
        return answers

    def unprepare(self, driver_name: str, claims: list[ClaimKey], timeout: float = CALL_TIMEOUT_S) -> dict[str, str]:
        """NodeUnprepareResources for ``claims``: the error per claim uid ("" when unprepared, then forgotten)."""
        request = dra.NodeUnprepareResourcesRequest(claims=[dra.Claim(namespace=ns, uid=uid, name=name)
                                                            for ns, uid, name in claims])
        response = self._driver_call(driver_name, services.UNPREPARE, request, dra.NodeUnprepareResourcesResponse,
                                     timeout)
        errors: dict[str, str] = {}
        for _, uid, _ in claims:
            errors[uid] = response.claims[uid].error if uid in response.claims else \
                f"plugin answered no result for claim {uid}"
            if not errors[uid]:
                with self._cond:
                    self.prepared.pop(uid, None)
        self._note_unasked(driver_name, response.claims, claims)
        return errors

    def _note_unasked(self, driver_name: str, answered: Any, claims: list[ClaimKey]) -> None:
        unasked = sorted(set(answered) - {uid for _, uid, _ in claims})
        if unasked:
            self._error(f"DRA driver {driver_name} answered for claims it was not asked about: {unasked}")

    def reboot_replay(self, driver_name: str) -> dict[str, PrepareAnswer]:
        """After a reboot the kubelet prepares every checkpointed claim of the driver again
        (kubernetes#141433: it keeps no "is prepared" cache); the answers per uid."""
        with self._cond:
            claims = [(ns, uid, name) for uid, (driver, ns, name) in self.prepared.items() if driver == driver_name]
        return self.prepare(driver_name, claims) if claims else {}

    # Health ----------------------------------------------------------------------------------

    def health(self, driver_name: str) -> dict[tuple[str, str], HealthEntry]:
        """The last known health of the driver's devices, by (pool, device)."""
        with self._cond:
            return dict(self._health.get(driver_name, {}))

    def health_messages(self, driver_name: str) -> list[dict[tuple[str, str], HealthEntry]]:
        """Every health stream message received from the driver (rejected ones included), in order."""
        with self._cond:
            return list(self._health_messages.get(driver_name, []))

    def wait_health(self, driver_name: str, predicate: Callable[[dict[tuple[str, str], HealthEntry]], bool],
                    timeout: float = 10.0) -> dict[tuple[str, str], HealthEntry]:
        """Wait until the driver's device health satisfies ``predicate``; that health."""
        self.wait_for(lambda: predicate(dict(self._health.get(driver_name, {}))), timeout,
                      f"the health of {driver_name}'s devices")
        return self.health(driver_name)

    def _current(self, view: DraPluginView) -> bool:
        with self._cond:
            return self.plugins.get(view.name) is view

    def _watch_health(self, view: DraPluginView) -> None:
        backoff = 0.1
        while self._current(view):
            stream = view.channel.unary_stream(
                method_path(view.health_service or "", services.WATCH),
                request_serializer=health_pb.NodeWatchResourcesRequest.SerializeToString,
                response_deserializer=health_pb.NodeWatchResourcesResponse.FromString)
            try:
                for message in stream(health_pb.NodeWatchResourcesRequest()):
                    backoff = 0.1
                    self._take_health(view, message)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    self._error(f"DRA driver {view.name}: no health stream ({exc.details()})")
                    return
            except ValueError:
                pass  # the channel was closed under the call
            with self._cond:
                if self.plugins.get(view.name) in (view, None):
                    self._mark_unknown(view.name)
            self._stopped.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def _take_health(self, view: DraPluginView, message: Any) -> None:
        entries = {(d.device.pool_name, d.device.device_name): HealthEntry(
            HEALTH_NAMES.get(d.health, "Unknown"), d.message, d.last_updated_time, d.health_check_timeout_seconds)
            for d in message.devices}
        too_long = sorted(f"{pool}/{device}" for (pool, device), entry in entries.items()
                          if len(entry.message.encode()) > MAX_HEALTH_MESSAGE_BYTES)
        with self._cond:
            if self.plugins.get(view.name) is not view:
                return
            self._health_messages.setdefault(view.name, []).append(entries)
            if too_long:
                self.errors.append(f"DRA driver {view.name}: health message of {', '.join(too_long)} is longer "
                                   f"than {MAX_HEALTH_MESSAGE_BYTES} bytes: update rejected")
            else:
                self._health[view.name] = entries  # each message is the full list: replace, not merge
            self._cond.notify_all()

    def _mark_unknown(self, driver_name: str) -> None:
        """Every device of the driver Unknown, as the kubelet marks them when a plugin goes away (lock held)."""
        now = int(time.time())
        known = self._health.get(driver_name, {})
        self._health[driver_name] = {key: HealthEntry("Unknown", "the plugin's health stream ended", now,
                                                      entry.timeout_s) for key, entry in known.items()}
        self._cond.notify_all()
