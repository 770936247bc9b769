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
from multidp.service import DevicePluginService

log = logging.getLogger(__name__)

MAX_SOCKET_PATH = 107
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 5.0
WITHDRAW_WAIT_S = 1.0
# Fast reconnects: a new kubelet.sock can exist a moment before the kubelet answers.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 5),
    ("grpc.min_reconnect_backoff_ms", 5),
    ("grpc.max_reconnect_backoff_ms", 100),
]
SERVER_OPTIONS = [("grpc.so_reuseport", 0)]


class RegistrationError(Exception):
    pass


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
                raise RegistrationError(f"the kubelet at {kubelet_socket} did not answer within {timeout:g} s") from None
            if code is grpc.StatusCode.UNAVAILABLE:
                raise RegistrationError(f"the kubelet at {kubelet_socket} is not answering: {exc.details()}") from None
            raise RegistrationError(f"the kubelet refused: {exc.details()} ({code.name})") from None


class Endpoint:
    """Serves one :class:`DevicePluginService` and keeps it registered."""

    def __init__(self, service: DevicePluginService, socket_path: Path, kubelet_socket: Path,
                 register_timeout: float) -> None:
        self.service = service
        self.socket_path = socket_path
        self.kubelet_socket = kubelet_socket
        self.register_timeout = register_timeout
        self.registrations = 0
        self.last_error = ""
        self._server: grpc.Server | None = None
        self._pool = ThreadPoolExecutor(8, thread_name_prefix=f"grpc-{socket_path.stem[-8:]}")
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._reserve = True
        # Each kubelet start (or loss of our socket) needs one more registration.
        self._generation = 1
        self._registered_generation = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"endpoint-{socket_path.stem}", daemon=True)

    @property
    def resource(self) -> str:
        return self.service.resource

    def start(self) -> None:
        if len(str(self.socket_path).encode()) > MAX_SOCKET_PATH:
            raise RegistrationError(
                f"socket path {self.socket_path} is longer than {MAX_SOCKET_PATH} bytes; use a shorter plugin dir"
            )
        self._wake.set()
        self._thread.start()

    # Events, from the file watcher or the host ---------------------------------

    @property
    def registered(self) -> bool:
        return self._registered_generation == self._generation

    def kubelet_started(self) -> None:
        """A new kubelet.sock appeared: register again."""
        with self._lock:
            self._generation += 1
        self._wake.set()

    def socket_deleted(self) -> None:
        """Our socket went (the kubelet removes them all when it restarts)."""
        with self._lock:
            if self._stopping.is_set() or is_socket(self.socket_path):
                return  # stopping, or already served again
            self._reserve = True
            self._generation += 1
        self._wake.set()

    def check(self) -> None:
        """A safety net for missed file events: re-serve if our socket is gone."""
        self.socket_deleted()

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
                generation = self._generation
            # The kubelet removes every socket before it creates kubelet.sock, so
            # check ours before registering: it must be there to be dialled back.
            if (reserve or not is_socket(self.socket_path)) and not self._serve():
                retry_at, delay = time.monotonic() + delay, min(delay * 2, BACKOFF_MAX_S)
                continue
            if self._registered_generation == generation:
                retry_at = None
                continue
            if not is_socket(self.kubelet_socket):
                self._note(f"waiting for the kubelet: {self.kubelet_socket} does not exist yet")
                retry_at = None  # the file watcher wakes us when it appears
                continue
            try:
                register(self.kubelet_socket, self.socket_path.name, self.resource, self.service.options(),
                         self.register_timeout)
            except RegistrationError as exc:
                self._note(f"registration failed, retrying in {delay:.2f} s: {exc}")
                retry_at, delay = time.monotonic() + delay, min(delay * 2, BACKOFF_MAX_S)
                continue
            with self._lock:
                self._registered_generation = generation
                again = generation != self._generation
            self.registrations += 1
            self.last_error = ""
            delay, retry_at = BACKOFF_FIRST_S, (time.monotonic() if again else None)
            log.info("resource %s registered with the kubelet (endpoint %s)", self.resource, self.socket_path.name)

    def _note(self, message: str) -> None:
        # The same reason is logged once until something changes.
        if message.split(",")[0] != self.last_error.split(",")[0]:
            log.warning("resource %s: %s", self.resource, message)
        self.last_error = message

    def _serve(self) -> bool:
        old, self._server = self._server, None
        if old is not None:
            old.stop(grace=None)
        try:
            if is_socket(self.socket_path):
                self.socket_path.unlink()
            server = grpc.server(self._pool, options=SERVER_OPTIONS)
            pb_grpc.add_DevicePluginServicer_to_server(self.service, server)
            if not server.add_insecure_port(f"unix:{self.socket_path}"):
                raise OSError(f"cannot listen on {self.socket_path}")
            server.start()
            os.chmod(self.socket_path, 0o600)
        except (OSError, RuntimeError) as exc:
            self._note(f"cannot serve on {self.socket_path}, retrying: {exc}")
            with self._lock:
                self._reserve = True
            return False
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
        self._pool.shutdown(wait=False, cancel_futures=True)
