"""A small HTTP server for the observability port that slow or idle clients cannot starve.

The port is open to whoever reaches the node, and the kubelet's probes come through it, so a
well-behaved probe must be answered within its timeout whatever the other clients do:

- One thread reads every connection (``selectors``): a connection costs a file descriptor and
  at most MAX_HEAD_BYTES of buffer, never a thread, however slowly it sends.
- A connection has HEAD_DEADLINE_S from accept to finish its request, and ANSWER_DEADLINE_S
  more to be answered. A per-read timeout would restart at every byte a client trickles in.
- At most MAX_CONNECTIONS are kept. One more crowds out the oldest, so a crowd of slow clients
  cannot keep out a fast one: a probe sends its request at once and is answered long before
  MAX_CONNECTIONS newer connections make it the oldest.
- A complete request goes to its lane: one thread per lane runs its handlers, so a probe never
  waits behind a slow scrape. Answers are written by the loop without blocking.

Every answer is HTTP/1.0 and closes the connection.
"""

from __future__ import annotations

import collections
import http
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping

import msgspec

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
MAX_HEAD_BYTES = 8192
HEAD_DEADLINE_S = 5.0
ANSWER_DEADLINE_S = 10.0
ACCEPTS_PER_TURN = 16  # then read what came in, so a crowd arriving cannot push out a request already here
ACCEPT_FAILURE_PAUSE_S = 0.1  # out of file descriptors: the listener stays readable, do not spin


class Answer(msgspec.Struct, frozen=True):
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, head_only: bool) -> bytes:
        reason = http.HTTPStatus(self.status).phrase
        lines = [f"HTTP/1.0 {self.status} {reason}", "Server: multidp", f"Content-Type: {self.content_type}",
                 f"Content-Length: {len(self.body)}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


Handler = Callable[[], Answer]
BAD_REQUEST = Answer(400, "text/plain", b"bad request line\n")
TOO_LARGE = Answer(431, "text/plain", b"request header too large\n")
NOT_ALLOWED = Answer(405, "text/plain", b"only GET and HEAD\n", (("Allow", "GET, HEAD"),))
FAILED = Answer(500, "text/plain", b"internal error (logged)\n")


class _Connection:
    """One client: what it sent so far, its deadline, and what is left to send it."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.received = bytearray()
        self.outgoing = memoryview(b"")
        self.closed = False


class _Job(msgspec.Struct, frozen=True):
    conn: _Connection
    path: str
    handler: Handler
    head_only: bool


class BoundedHTTPServer:
    """Serves ``lanes`` ({lane: {path: handler}}) on ``address``; other paths get ``not_found``."""

    def __init__(self, address: tuple[str, int], lanes: Mapping[str, Mapping[str, Handler]], not_found: Answer,
                 name: str = "http") -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(address)
            self._listener.listen(MAX_CONNECTIONS)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.server_address: tuple[str, int] = self._listener.getsockname()
        self._not_found = not_found
        self._routes: dict[str, tuple[queue.SimpleQueue[_Job | None], Handler]] = {}
        self._lanes: list[tuple[queue.SimpleQueue[_Job | None], threading.Thread]] = []
        for lane, handlers in lanes.items():
            jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
            self._lanes.append((jobs, threading.Thread(target=self._run_lane, args=(jobs,), name=f"{name}-{lane}",
                                                       daemon=True)))
            self._routes.update((path, (jobs, handler)) for path, handler in handlers.items())
        self._selector = selectors.DefaultSelector()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)
        self._answers: collections.deque[tuple[_Connection, bytes]] = collections.deque()
        self._connections: dict[_Connection, None] = {}  # oldest first
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        for _, lane in self._lanes:
            lane.start()
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for jobs, _ in self._lanes:
            jobs.put(None)
        for _, lane in self._lanes:
            if lane.is_alive():
                lane.join(timeout=2)  # a handler stuck in the host's state is not worth waiting for
        for conn in list(self._connections):
            self._close(conn)
        for sock in (self._listener, self._wake_in, self._wake_out):
            sock.close()
        self._selector.close()

    # The loop: the only thread that touches connections -----------------------------

    def _loop(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_in, selectors.EVENT_READ)
        while not self._stopping.is_set():
            for key, events in self._selector.select(self._next_timeout()):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj is self._wake_in:
                    self._drain_wakes()
                elif not key.data.closed:  # it may have been crowded out in this very turn
                    self._serve(key.data, events)
            while self._answers:
                conn, data = self._answers.popleft()
                if not conn.closed:
                    self._send(conn, data)
            now = time.monotonic()
            for conn in [c for c in self._connections if c.deadline <= now]:
                log.debug("http: closing a connection at its deadline")
                self._close(conn)

    def _serve(self, conn: _Connection, events: int) -> None:
        try:
            (self._read if events & selectors.EVENT_READ else self._write)(conn)
        except Exception:  # noqa: BLE001 - a bug here must cost one connection, not the probes
            log.exception("http: a connection failed")
            self._close(conn)

    def _next_timeout(self) -> float | None:
        """Until the soonest connection deadline; none without connections (stop and the lanes wake
        the loop themselves), so an idle port costs no wake-ups."""
        if not self._connections:
            return None
        soonest = min(c.deadline for c in self._connections)
        return max(soonest - time.monotonic(), 0.0)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("http: cannot accept a connection: %s", exc.strerror or exc)
                time.sleep(ACCEPT_FAILURE_PAUSE_S)
                return
            sock.setblocking(False)
            if len(self._connections) >= MAX_CONNECTIONS:
                self._close(next(iter(self._connections)))  # the oldest
            conn = _Connection(sock, time.monotonic() + HEAD_DEADLINE_S)
            self._connections[conn] = None
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)  # the client went away (or reset) before its request was complete
            return
        conn.received += data
        end = _end_of_head(conn.received)
        if end < 0 and len(conn.received) <= MAX_HEAD_BYTES:
            return
        self._selector.unregister(conn.sock)
        conn.deadline = time.monotonic() + ANSWER_DEADLINE_S
        if end < 0 or end > MAX_HEAD_BYTES:
            self._send(conn, TOO_LARGE.encode(head_only=False))
            return
        self._route(conn, bytes(conn.received[:end]))

    def _route(self, conn: _Connection, head: bytes) -> None:
        parts = head.split(b"\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._send(conn, BAD_REQUEST.encode(head_only=False))
            return
        method, target = parts[0], parts[1]
        head_only = method == "HEAD"
        path = target.split("?", 1)[0]
        route = self._routes.get(path)
        if method not in ("GET", "HEAD"):
            self._send(conn, NOT_ALLOWED.encode(head_only=False))
        elif route is None:
            self._send(conn, self._not_found.encode(head_only))
        else:
            jobs, handler = route
            jobs.put(_Job(conn, path, handler, head_only))

    def _send(self, conn: _Connection, data: bytes) -> None:
        conn.outgoing = memoryview(data)
        self._write(conn)
        if not conn.closed and conn.outgoing:
            self._selector.register(conn.sock, selectors.EVENT_WRITE, conn)

    def _write(self, conn: _Connection) -> None:
        try:
            sent = conn.sock.send(conn.outgoing)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.outgoing = conn.outgoing[sent:]
        if not conn.outgoing:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
                conn.sock.recv(65536)  # what the client sent past its head: unread, close() would reset
            except OSError:
                pass
            self._close(conn)

    def _close(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._connections.pop(conn, None)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass  # not registered: waiting for its lane
        conn.sock.close()

    # Lanes: handlers run here, never on the loop ----------------------------------------

    def _run_lane(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        while (job := jobs.get()) is not None:
            if job.conn.closed:
                continue  # dropped while it waited (its deadline, or crowded out)
            try:
                answer = job.handler()
            except Exception:  # noqa: BLE001 - one failed answer, the server carries on
                log.exception("http: answering %s failed", job.path)
                answer = FAILED
            self._answers.append((job.conn, answer.encode(job.head_only)))
            self._wake()

    def _wake(self) -> None:
        try:
            self._wake_out.send(b"\0")
        except OSError:
            pass  # full: the loop has wakes to read already (or it is closed: stopping)

    def _drain_wakes(self) -> None:
        try:
            while self._wake_in.recv(4096):
                pass
        except OSError:
            pass


def _end_of_head(received: bytearray) -> int:
    """Where the request's head ends (past its blank line), or -1 while it has not ended."""
    ends = [index + len(blank) for blank in (b"\r\n\r\n", b"\n\n") if (index := received.find(blank)) >= 0]
    return min(ends, default=-1)
