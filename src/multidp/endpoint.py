"""One resource's endpoint: its gRPC server on its own socket, and its registration.

Serve first, then register: the kubelet dials back inside Register. Each
endpoint has its own thread for (re)serving and registering, so a kubelet that
is absent, slow or refusing delays only the endpoint that is talking to it.
File events (see :mod:`multidp.watch`) wake the thread when the kubelet
restarts; failures are retried with a growing delay and a log line saying why.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from multidp.api import pb, pb_grpc
from multidp.names import API_VERSION
from multidp.service import DevicePluginService, add_to_server

log = logging.getLogger(__name__)

MAX_SOCKET_PATH = 107
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 5.0
WITHDRAW_WAIT_S = 1.0
# Fast reconnects: a new kubelet.sock can exist a moment before the kubelet answers.
# A local subchannel pool keeps a new channel from inheriting the reconnect
# backoff of an earlier channel to the same path (gRPC shares them by default).
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 5),
    ("grpc.min_reconnect_backoff_ms", 5),
    ("grpc.max_reconnect_backoff_ms", 100),
]
SERVER_OPTIONS = [("grpc.so_reuseport", 0)]


class RegistrationError(Exception):
    pass


def socket_identity(path: Path) -> tuple[int, int, int] | None:
    """(device, inode, ctime) of a socket file: a new kubelet.sock has a new one."""
    try:
        st = path.lstat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns) if stat.S_ISSOCK(st.st_mode) else None


def is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.lstat().st_mode)
    except OSError:
        return False


def register(kubelet_socket: Path, endpoint: str, resource: str, options: pb.DevicePluginOptions,
             timeout: float) -> None:
    """Call the kubelet's Register; raise RegistrationError saying why it failed."""
    request = pb.RegisterRequest(version=API_VERSION, endpoint=endpoint, resource_name=resource, options=options)
    with grpc.insecure_channel(f"unix:{kubelet_socket}", options=CHANNEL_OPTIONS) as channel:
        try:
            pb_grpc.RegistrationStub(channel).Register(request, timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                reason = f"the kubelet at {kubelet_socket} did not answer within {timeout:g} s"
            elif code is grpc.StatusCode.UNAVAILABLE:
                reason = f"the kubelet at {kubelet_socket} is not answering: {exc.details()}"
            else:
                reason = f"the kubelet refused: {exc.details()} ({code.name})"
            raise RegistrationError(reason) from None


class Endpoint:
    """Serves one :class:`DevicePluginService` and keeps it registered."""

    def __init__(self, service: DevicePluginService, socket_path: Path, kubelet_socket: Path,
                 register_timeout: float, pool: ThreadPoolExecutor) -> None:
        self.service = service
        self.socket_path = socket_path
        self.kubelet_socket = kubelet_socket
        self.register_timeout = register_timeout
        self.registrations = 0
        self.last_error = ""
        self._server: grpc.Server | None = None
        self._pool = pool  # shared by every endpoint's gRPC server
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._reserve = True
        self._serial = 0
        # Registered with which kubelet.sock (inode, ctime) while serving which socket.
        self._registered_for: tuple[object, int] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"endpoint-{socket_path.stem}", daemon=True)

    @property
    def resource(self) -> str:
        return self.service.resource

    def start(self) -> None:
        # Room for the temporary name the socket is bound under (see _serve).
        if len(str(self.socket_path).encode()) + 8 > MAX_SOCKET_PATH:
            raise RegistrationError(
                f"socket path {self.socket_path} is longer than {MAX_SOCKET_PATH} bytes; use a shorter plugin dir"
            )
        self._wake.set()
        self._thread.start()

    # Events, from the file watcher or the host ---------------------------------

    @property
    def serving(self) -> bool:
        """The endpoint's thread, which keeps its gRPC server up, is running."""
        return self._thread.is_alive() and not self._stopping.is_set()

    @property
    def registered(self) -> bool:
        return self._registered_for == (socket_identity(self.kubelet_socket), self._serial)

    def kubelet_started(self) -> None:
        """A new kubelet.sock appeared: register again."""
        self._wake.set()

    def socket_deleted(self) -> None:
        """Our socket went (the kubelet removes them all when it restarts)."""
        with self._lock:
            if self._stopping.is_set() or is_socket(self.socket_path):
                return  # stopping, or already served again
            self._reserve = True
        self._wake.set()

    def check(self) -> None:
        """A safety net for missed file events: re-serve if our socket is gone."""
        self.socket_deleted()
        if not self.registered:
            self._wake.set()

    # The endpoint's thread ------------------------------------------------------

    def _loop(self) -> None:
        delay = BACKOFF_FIRST_S
        retry_at: float | None = None
        while not self._stopping.is_set():
            timeout = None if retry_at is None else max(0.0, retry_at - time.monotonic())
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stopping.is_set():
                return
            with self._lock:
                reserve, self._reserve = self._reserve, False
            # The kubelet removes every socket before it creates kubelet.sock, so
            # check ours before registering: it must be there to be dialled back.
            if (reserve or not is_socket(self.socket_path)) and not self._serve():
                retry_at, delay = time.monotonic() + delay, min(delay * 2, BACKOFF_MAX_S)
                continue
            kubelet = socket_identity(self.kubelet_socket)
            if kubelet is None:
                self._note(f"waiting for the kubelet: {self.kubelet_socket} does not exist yet")
                retry_at = None  # the file watcher wakes us when it appears
                continue
            # One registration per (kubelet, socket): a second Register for the same
            # resource can knock out the first in the kubelet (kubernetes#121994).
            if self._registered_for == (kubelet, self._serial):
                retry_at = None
                continue
            try:
                register(self.kubelet_socket, self.socket_path.name, self.resource, self.service.options(),
                         self.register_timeout)
            except RegistrationError as exc:
                self._note(f"registration failed, retrying in {delay:.2f} s: {exc}")
                retry_at, delay = time.monotonic() + delay, min(delay * 2, BACKOFF_MAX_S)
                continue
            self._registered_for = (kubelet, self._serial)
            self.registrations += 1
            self.last_error = ""
            delay, retry_at = BACKOFF_FIRST_S, None
            log.info("resource %s registered with the kubelet (endpoint %s)", self.resource, self.socket_path.name)

    def _note(self, message: str) -> None:
        # The same reason is logged once until something changes.
        if message.split(",")[0] != self.last_error.split(",")[0]:
            log.warning("resource %s: %s", self.resource, message)
        self.last_error = message

    def _serve(self) -> bool:
        """Serve on a fresh socket, renamed into place when it listens.

        gRPC unlinks a server's socket path when the server stops; binding each
        server to its own temporary name keeps an old server, stopped in the
        background, from removing the socket of its successor. The rename also
        makes the socket appear at its final path only once it accepts calls.
        """
        old, self._server = self._server, None
        self._serial += 1
        temporary = self.socket_path.with_name(f".{self.socket_path.name}.{self._serial}")
        try:
            server = grpc.server(self._pool, options=SERVER_OPTIONS)
            add_to_server(self.service, server)
            if not server.add_insecure_port(f"unix:{temporary}"):
                raise OSError(f"cannot listen on {temporary}")
            server.start()
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.socket_path)
        except (OSError, RuntimeError) as exc:
            self._note(f"cannot serve on {self.socket_path}, retrying: {exc}")
            with self._lock:
                self._reserve = True
            return False
        finally:
            if old is not None:
                threading.Thread(target=old.stop, args=(None,), name="old-server-stop", daemon=True).start()
        self._server = server
        return True

    # Stopping ---------------------------------------------------------------------

    def stop(self, withdraw: bool) -> None:
        """Stop serving; with ``withdraw`` first tell the kubelet there are no devices."""
        if withdraw and self.registered:
            version = self.service.state.withdraw()
            if not self.service.state.wait_sent(version, WITHDRAW_WAIT_S):
                log.warning("resource %s: the kubelet did not take the empty list in time", self.resource)
        with self._lock:
            self._stopping.set()
        self.service.stopping.set()
        self.service.state.wake()
        self._wake.set()
        if self._thread.is_alive():
            # A registration in flight may wait on a slow kubelet; do not wait for it.
            self._thread.join(timeout=0.5)
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None
        if is_socket(self.socket_path):
            self.socket_path.unlink(missing_ok=True)
