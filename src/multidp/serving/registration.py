"""Talking to the kubelet's Registration service, and telling sockets apart.

A socket file is known by its identity (device, inode, change time): a new
``kubelet.sock`` is a new kubelet, and a socket of ours is ours only while its
identity is the one we served.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Callable
from pathlib import Path

import grpc

from multidp.api import pb, pb_grpc
from multidp.serving.sockets import API_VERSION

Identity = tuple[int, int, int]

# Fast reconnects: a new kubelet.sock can exist a moment before the kubelet answers.
# A local subchannel pool keeps a new channel from inheriting the reconnect
# backoff of an earlier channel to the same path (gRPC shares them by default).
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 5),
    ("grpc.min_reconnect_backoff_ms", 5),
    ("grpc.max_reconnect_backoff_ms", 100),
]


class RegistrationError(Exception):
    pass


class KubeletChanged(RegistrationError):
    """The kubelet restarted, or our socket went, between the checks and the call."""


def socket_identity(path: Path) -> Identity | None:
    """(device, inode, ctime) of a socket file, or None when there is no socket there."""
    try:
        st = path.lstat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns) if stat.S_ISSOCK(st.st_mode) else None


def is_socket(path: Path) -> bool:
    return socket_identity(path) is not None


class KubeletClient:
    """The Registration calls of every endpoint, over one channel per kubelet.

    A channel belongs to one kubelet.sock identity: when the identity changes
    (the kubelet restarted) the next call opens a new one, so no call can drift
    to the next kubelet through a reconnect, and the endpoints of one kubelet
    share a single connection instead of each dialling its own.
    """

    def __init__(self, kubelet_socket: Path, timeout: float) -> None:
        self.kubelet_socket = kubelet_socket
        self.timeout = timeout
        self._lock = threading.Lock()
        self._kubelet: Identity | None = None
        self._channel: grpc.Channel | None = None
        self._stub: pb_grpc.RegistrationStub | None = None
        self._retired: list[grpc.Channel] = []  # closed one restart later: calls may still be on them

    def _stub_for(self, kubelet: Identity) -> tuple[grpc.Channel, pb_grpc.RegistrationStub]:
        with self._lock:
            if self._kubelet != kubelet or self._channel is None or self._stub is None:
                for old in self._retired:
                    old.close()
                self._retired = [self._channel] if self._channel is not None else []
                self._channel = grpc.insecure_channel(f"unix:{self.kubelet_socket}", options=CHANNEL_OPTIONS)
                self._stub = pb_grpc.RegistrationStub(self._channel)
                self._kubelet = kubelet
            return self._channel, self._stub

    def _discard(self, channel: grpc.Channel) -> None:
        """Forget a channel that failed to connect: its reconnect backoff must not delay the retry."""
        with self._lock:
            if self._channel is channel:
                self._retired.append(channel)
                self._channel = self._stub = self._kubelet = None

    def close(self) -> None:
        with self._lock:
            for channel in [*self._retired, *([self._channel] if self._channel is not None else [])]:
                channel.close()
            self._retired, self._channel, self._stub, self._kubelet = [], None, None, None

    def register(self, kubelet: Identity, still_ours: Callable[[], bool], endpoint: str, resource: str,
                 options: pb.DevicePluginOptions) -> None:
        """Register ``resource`` with the kubelet whose socket has identity ``kubelet``.

        Check that it is still that kubelet and that our socket is still there
        (``still_ours``), then call without waiting for a connection: a call that
        waited could reach the next kubelet, which has just removed our socket, and
        then waits 10 s dialling it in vain. A kubelet.sock that does not accept yet
        fails at once; the caller retries.
        """
        request = pb.RegisterRequest(version=API_VERSION, endpoint=endpoint, resource_name=resource, options=options)
        if socket_identity(self.kubelet_socket) != kubelet or not still_ours():
            raise KubeletChanged("the kubelet restarted, or our socket went, before the call")
        channel, stub = self._stub_for(kubelet)
        try:
            # Fail fast: a call that waited for a connection could reach the next kubelet.
            stub.Register(request, timeout=self.timeout, wait_for_ready=False)
        except grpc.RpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.CANCELLED and socket_identity(self.kubelet_socket) != kubelet:
                raise KubeletChanged("the kubelet restarted during the call") from None
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                reason = f"the kubelet at {self.kubelet_socket} did not answer within {self.timeout:g} s"
            elif code is grpc.StatusCode.UNAVAILABLE:
                self._discard(channel)
                reason = f"the kubelet at {self.kubelet_socket} is not answering: {exc.details()}"
            else:
                reason = f"the kubelet refused: {exc.details()} ({code.name})"
            raise RegistrationError(reason) from None
