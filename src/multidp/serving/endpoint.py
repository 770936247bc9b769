"""One resource's endpoint: its gRPC server on its own socket, and its registration.

Serve first, then register: the kubelet dials back inside Register. Each
endpoint has its own thread for registering, so a kubelet that is absent, slow
or refusing delays only the endpoint talking to it. File events (see
:mod:`multidp.host.restarts`) wake it when the kubelet restarts; failures are
retried with a growing delay and a log line saying why.

Serving again when our socket disappears never waits for a Register in flight:
that Register may be with a new kubelet that is dialling this very socket. And
it does not wait for a gRPC server to start either: a spare one, bound in a
private directory ahead of time, is renamed into place (a kubelet restart
removes every endpoint's socket at once, and starting six servers then would
delay the last registration by several milliseconds).

The servers are grpc.aio servers on the host's one event loop
(:mod:`multidp.serving.eventloop`): an idle server, spare or not, costs no thread
and no wake-up. The endpoint's own thread only registers, and waits for events.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from multidp.model import Device
from multidp.plugins.runner import DriverRunner
from multidp.serving.eventloop import ServingLoop
from multidp.serving.registration import (
    Identity,
    KubeletChanged,
    KubeletClient,
    RegistrationError,
    socket_identity,
)
from multidp.serving.resource import Snapshot
from multidp.serving.service import DevicePluginService
from multidp.serving.sockets import PRIVATE_DIR_PREFIX
from multidp.serving.stats import ResourceStats
from multidp.serving.wire import add_to_server

log = logging.getLogger(__name__)

MAX_SOCKET_PATH = 107
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 5.0
WITHDRAW_WAIT_S = 1.0
OLD_SERVER_STOP_DELAY_S = 0.2
SPARE_DELAY_S = 0.5  # after serving: the spare's start must not compete with registrations
SERVER_OPTIONS = [("grpc.so_reuseport", 0)]


class _BoundServer:
    """A started gRPC server on a socket in a private 0700 directory, not yet in place."""

    def __init__(self, private: Path, server: grpc.aio.Server, loop: ServingLoop) -> None:
        self.private = private
        self.path = private / "s"
        self.server = server
        self._serving = loop

    @classmethod
    def bind(cls, service: DevicePluginService, directory: Path, loop: ServingLoop) -> _BoundServer:
        """Start one from a thread (never the loop's): waits for the loop to start it."""
        return loop.run(cls.bound(service, directory, loop))

    @classmethod
    async def bound(cls, service: DevicePluginService, directory: Path, loop: ServingLoop) -> _BoundServer:
        """Start one on the loop."""
        private = Path(tempfile.mkdtemp(prefix=PRIVATE_DIR_PREFIX, dir=directory))
        path = private / "s"
        server: grpc.aio.Server | None = None
        try:
            server = grpc.aio.server(options=SERVER_OPTIONS)
            add_to_server(service, server)
            if not server.add_insecure_port(f"unix:{path}"):
                raise OSError(f"cannot listen on {path}")
            await server.start()
            # Its mode is set here, where no symlink can be swapped in.
            os.chmod(path, 0o600)
        except BaseException:
            if server is not None:
                await server.stop(None)
            shutil.rmtree(private, ignore_errors=True)
            raise
        return cls(private, server, loop)

    def place(self, destination: Path) -> grpc.aio.Server:
        """Rename the socket to ``destination``; the server is then the caller's."""
        os.replace(self.path, destination)
        try:
            self.private.rmdir()  # empty now: cheaper than rmtree on the hot path
        except OSError:
            shutil.rmtree(self.private, ignore_errors=True)
        return self.server

    def discard(self) -> None:
        self._serving.spawn(self.server.stop(None))
        shutil.rmtree(self.private, ignore_errors=True)


class Endpoint:
    """Serves one :class:`DevicePluginService` and keeps it registered."""

    def __init__(self, service: DevicePluginService, socket_path: Path, kubelet: KubeletClient,
                 loop: ServingLoop) -> None:
        self.service = service
        self.socket_path = socket_path
        self.kubelet = kubelet
        self.kubelet_socket = kubelet.kubelet_socket
        self.registrations = 0
        self.last_error = ""
        self._serving = loop  # shared: every endpoint's servers, and work put off until registrations are done
        self._server: grpc.aio.Server | None = None
        self._spare: _BoundServer | None = None  # the next server, ready to be renamed into place
        self._served: Identity | None = None  # the identity of the socket we serve
        self._serve_lock = threading.Lock()  # bind → rename → identity, and every look at them
        self._registered_for: tuple[Identity, Identity] | None = None  # (kubelet.sock, ours)
        self._kubelet_refused: Identity | None = None  # the kubelet.sock our last failed Register went to
        self._registering = False
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"endpoint-{socket_path.stem}", daemon=True)

    @property
    def resource(self) -> str:
        return self.service.resource

    @property
    def driver(self) -> str:
        return self.service.state.driver

    @property
    def snapshot(self) -> Snapshot:
        """What the kubelet is told now (or is about to be)."""
        return self.service.state.snapshot

    @property
    def stats(self) -> ResourceStats:
        """The Allocate counters of this resource (read by the metrics collector)."""
        return self.service.stats

    # The resource's devices and driver -----------------------------------------

    def update(self, devices: Sequence[Device]) -> bool:
        """Take a scan's devices; True when the kubelet hears of a change."""
        return self.service.state.update(devices)

    def mark_unhealthy(self, reason: str) -> bool:
        """Keep the known devices but vouch for none (the driver's scan failed or hung)."""
        return self.service.state.mark_unhealthy(reason)

    def rebind(self, runner: DriverRunner) -> None:
        """Serve through ``runner`` from now on (a reload created the driver again).

        The kubelet reads the options (pre-start, preferred allocation) only while
        registering, so when they change the endpoint serves on a fresh server and
        registers again; the old server stops first, ending the kubelet's stream
        before the new registration (a stream ending after it could knock the new
        one out: kubernetes#121994).
        """
        before = self.service.options()
        self.service.use_runner(runner)
        after = self.service.options()
        if after == before:
            return
        log.info("resource %s: its options changed (%s); registering again", self.resource,
                 str(after).replace("\n", " ").strip())
        with self._serve_lock:
            if self._stopping.is_set():
                return
            server, self._server = self._server, None
            self._served = None  # the endpoint thread serves and registers anew
        if server is not None:
            self._stop_server(server)
        # Serve again now rather than on the endpoint's thread, which may be waiting in a Register
        # whose kubelet is dialling this very path: it reaches the new server instead of timing out.
        self._serve()
        self._wake.set()

    def _stop_server(self, server: grpc.aio.Server) -> None:
        """Stop ``server`` now, ending its streams, and wait for that (from a thread, never the loop)."""
        try:
            self._serving.run(server.stop(None))
        except (RuntimeError, TimeoutError) as exc:  # the loop closed or is wedged: the process is ending
            log.debug("resource %s: stopping a server: %s", self.resource, exc)

    def start(self) -> None:
        if len(str(self.socket_path).encode()) > MAX_SOCKET_PATH:
            raise RegistrationError(
                f"socket path {self.socket_path} is longer than {MAX_SOCKET_PATH} bytes; use a shorter plugin dir"
            )
        self._wake.set()
        self._thread.start()

    @property
    def serving(self) -> bool:
        """The endpoint's thread, which keeps its gRPC server up, is running."""
        return self._thread.is_alive() and not self._stopping.is_set()

    @property
    def registered(self) -> bool:
        kubelet = socket_identity(self.kubelet_socket)
        return kubelet is not None and self._registered_for == (kubelet, self._served)

    def _still(self, served: Identity) -> Callable[[], bool]:
        return lambda: self._served == served and self._ours()

    def _ours(self) -> bool:
        """Our socket is at its path (not gone, not replaced by someone else's)."""
        return self._served is not None and socket_identity(self.socket_path) == self._served

    # Events, from the file watcher or the host ---------------------------------

    def kubelet_started(self) -> None:
        """A new kubelet.sock appeared: register again."""
        self._wake.set()

    def socket_deleted(self) -> None:
        """Our socket may be gone (the kubelet removes them all when it restarts): serve again."""
        with self._serve_lock:
            if self._stopping.is_set() or self._ours():
                return  # stopping, or an event about an older socket of ours
            spare_ready, registering = self._spare is not None, self._registering
        # Renaming the spare into place is cheap enough for the file-event thread, and the
        # socket is back one thread hand-off sooner.
        if not (spare_ready and self._serve(only_spare=True)) and registering:
            # The endpoint thread waits in Register, maybe with a kubelet dialling this socket.
            threading.Thread(target=self._serve, name=f"serve-{self.socket_path.stem}", daemon=True).start()
        self._wake.set()

    def check(self) -> None:
        """A safety net for missed file events: our socket gone from under our server, or a
        kubelet.sock we have not tried to register with. A failure the endpoint already knows
        of is left to its growing retry delay: waking it here would retry at this check's
        pace instead (every 2 s, never backing off to 5 s)."""
        with self._serve_lock:
            lost = self._server is not None and not self._stopping.is_set() and not self._ours()
        if lost:
            self.socket_deleted()
            return
        kubelet = socket_identity(self.kubelet_socket)
        if kubelet is not None and kubelet != self._kubelet_refused and not self.registered:
            self._wake.set()

    # The endpoint's thread ------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._run()
            except Exception:  # noqa: BLE001 - a bug here must not leave the resource unserved for good
                log.exception("resource %s: endpoint error; carrying on", self.resource)
                self._stopping.wait(BACKOFF_MAX_S)
                self._wake.set()

    def _run(self) -> None:
        delay = BACKOFF_FIRST_S
        retry_at: float | None = None
        while not self._stopping.is_set():
            timeout = None if retry_at is None else max(0.0, retry_at - time.monotonic())
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stopping.is_set():
                return
            # The kubelet reads as "this kubelet" before our socket is checked: a kubelet
            # that starts in between removes our socket first, and the check sees it.
            kubelet = socket_identity(self.kubelet_socket)
            if not self._serve():
                retry_at, delay = time.monotonic() + delay, min(delay * 2, BACKOFF_MAX_S)
                continue
            if kubelet is None:
                self._note(f"waiting for the kubelet: {self.kubelet_socket} does not exist yet")
                retry_at = None  # the file watcher wakes us when it appears
                continue
            # One registration per (kubelet, socket): a second Register for the same
            # resource can knock out the first in the kubelet (kubernetes#121994).
            ours = self._served
            if ours is None or self._registered_for == (kubelet, ours):
                retry_at = None
                continue
            try:
                self._registering = True
                self.kubelet.register(kubelet, self._still(ours), self.socket_path.name, self.resource,
                                      self.service.options())
            except KubeletChanged:
                retry_at = time.monotonic()
                continue
            except RegistrationError as exc:
                self._kubelet_refused = kubelet
                self._note(f"registration failed, retrying in {delay:.2f} s: {exc}")
                retry_at, delay = time.monotonic() + delay, min(delay * 2, BACKOFF_MAX_S)
                continue
            finally:
                self._registering = False
            self._registered_for = (kubelet, ours)
            self.registrations += 1
            self.last_error = ""
            delay, retry_at = BACKOFF_FIRST_S, None
            log.info("resource %s registered with the kubelet (endpoint %s)", self.resource, self.socket_path.name)

    def _note(self, message: str) -> None:
        # The same reason is logged once until something changes.
        if message.split(",")[0] != self.last_error.split(",")[0]:
            log.warning("resource %s: %s", self.resource, message)
        self.last_error = message

    def _serve(self, only_spare: bool = False) -> bool:
        """Serve on a fresh socket unless ours is in place; False if that failed
        (or, with ``only_spare``, if there was no spare to use).

        The new server is the spare when there is one, else one started now;
        either way its socket was bound and given its mode in a private
        directory and is renamed into place. gRPC unlinks the path it bound
        when a server stops, so an old server, stopped in the background, can
        never remove its successor.
        """
        with self._serve_lock:
            if self._stopping.is_set() or self._ours():
                return True
            if only_spare and (self._spare is None or socket_identity(self._spare.path) is None):
                return False  # no live spare: the endpoint's thread starts a server, not the file-event thread
            old, self._server = self._server, None
            spare, self._spare = self._spare, None
            try:
                if spare is not None and socket_identity(spare.path) is None:  # its directory went
                    spare.discard()
                    spare = None
                if spare is None:
                    spare = _BoundServer.bind(self.service, self.socket_path.parent, self._serving)
                self._server = spare.place(self.socket_path)
                self._served = socket_identity(self.socket_path)
            except (OSError, RuntimeError) as exc:
                if spare is not None:
                    spare.discard()
                self._note(f"cannot serve on {self.socket_path}, retrying: {exc}")
                return False
            finally:
                if old is not None:
                    # Later, so that stopping it does not compete with registering the new one.
                    self._serving.later(OLD_SERVER_STOP_DELAY_S, lambda: old.stop(None))
            self._serving.later(SPARE_DELAY_S, self._prepare_spare)
            return True

    async def _prepare_spare(self) -> None:
        """Start the server that takes over when our socket is removed (the kubelet restarts).

        This runs on the loop, which must never wait for ``_serve_lock``: a thread holding it
        may be waiting for the loop to start a server. So the lock is only tried, and the
        spare offered again shortly when it is busy."""
        if self._stopping.is_set() or self._spare is not None:
            return
        try:
            spare = await _BoundServer.bound(self.service, self.socket_path.parent, self._serving)
        except (OSError, RuntimeError) as exc:
            log.debug("resource %s: no spare server (%s); the next restart starts one", self.resource, exc)
            return
        if not self._serve_lock.acquire(blocking=False):
            spare.discard()
            self._serving.later(SPARE_DELAY_S, self._prepare_spare)
            return
        try:
            if self._stopping.is_set() or self._spare is not None:
                spare.discard()
            else:
                self._spare = spare
        finally:
            self._serve_lock.release()

    # Stopping ---------------------------------------------------------------------

    def stop(self, withdraw: bool) -> None:
        """Stop serving; with ``withdraw`` first tell the kubelet there are no devices."""
        # Whoever watches (the kubelet's stream may be open before our Register returns)
        # hears of the empty list before the stream ends.
        if withdraw:
            version = self.service.state.withdraw()
            if self.service.streams and not self.service.state.wait_sent(version, WITHDRAW_WAIT_S):
                log.warning("resource %s: the kubelet did not take the empty list in time", self.resource)
        with self._serve_lock:
            self._stopping.set()
            server, self._server = self._server, None
            spare, self._spare = self._spare, None
            if self._ours():  # never a socket someone else serves now (a new endpoint for this resource)
                self.socket_path.unlink(missing_ok=True)
            self._served = None
        self.service.stopping.set()
        self.service.state.wake()
        self._wake.set()
        if server is not None:
            self._stop_server(server)
        if spare is not None:
            spare.discard()
        if self._thread.is_alive():
            # A registration in flight may wait on a slow kubelet; do not wait for it.
            self._thread.join(timeout=0.5)
