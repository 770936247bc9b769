"""A fake Kubernetes API server, for testing node-label mode without a cluster.

:class:`FakeApiServer` serves one Node on 127.0.0.1 (a free port) from a thread
of its own, and writes a kubeconfig that points at it: the host's real
lightkube client reads and watches the Node's labels as it would on a node.
multidp's node-label tests and ``bench/run.py`` use it; so may a driver's tests
that turn it on and off by label.

Enough of the real protocol for a client: GET /api/v1/nodes/<name> answers the
Node; GET /api/v1/nodes?watch=true&fieldSelector=metadata.name=<name> streams
JSON lines ({"type": "MODIFIED", "object": <Node>}) as labels change, and ends
the watch after ``timeoutSeconds`` (with a BOOKMARK first when the client
allows them), as the real API server does. It also holds ResourceClaims
(``claims``, a :class:`~multidp.testing.claims.ClaimStore`) and answers GETs of them
(``/apis/resource.k8s.io/v1/namespaces/<ns>/resourceclaims/<name>``), and ResourceSlices (``slices``, a
:class:`~multidp.testing.slices.SliceStore`: list, watch, create, update, delete under
``/apis/resource.k8s.io/v1/resourceslices``). Tests can change labels, drop the
watch connections, answer 403 to everything, and misbehave: accept a request
and never answer it (a half-open connection), or end every watch at once, with
410 Gone, with an expired-version ERROR event, or with garbage.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

from multidp.testing import slices
from multidp.testing.claims import ClaimStore, claim_path, status_body


class FakeApiServer(ThreadingHTTPServer):
    """One Node named ``node`` with ``labels``, served from the moment it is made; :meth:`close` when done.

    ``url`` is its address, :meth:`kubeconfig` a kubeconfig for it (``KUBECONFIG``). Tests may change
    ``forbidden`` (True: every request answered 403) and read ``requests`` (every path asked for, but the
    slices' paths: ``slices.requests`` has those). ``claims`` holds the ResourceClaims (its
    ``forbidden_claims`` refuses claim GETs only), ``slices`` the ResourceSlices (the switches below cover
    slice requests too). The Node's ``uid`` stays as made.

    Misbehaviour: ``stall_gets`` / ``stall_watches`` (True: such a request is read and never answered,
    not even after the switch is turned off again, until :meth:`drop_watches` or :meth:`close`; ``stalled``
    counts them); ``watch_answer``: ``"end"`` (every watch ends at once without an event), ``"gone"``
    (410 Gone), ``"expired"`` (an ERROR event saying 410, as for a too old resourceVersion) or
    ``"garbage"`` (a line that is not JSON, then the end).
    """

    daemon_threads = True

    def __init__(self, node: str, labels: dict[str, str] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.node = node
        self.labels = dict(labels or {})
        self.annotations: dict[str, str] = {}
        self.version = 1
        self.forbidden = False
        self.stall_gets = False
        self.stall_watches = False
        self.stalled = 0
        self.watch_answer: Literal["end", "gone", "expired", "garbage"] | None = None
        self.requests: list[str] = []
        self.claims = ClaimStore()
        self.slices = slices.SliceStore()
        self.uid = str(uuid.uuid4())
        self.cond = threading.Condition()
        self._generation = 0  # bumped to drop every open watch
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        """The server's base URL (``https://127.0.0.1:<port>``), as a kubeconfig names it."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def node_object(self) -> dict[str, Any]:
        """The Node as the API server answers it (its labels, its resourceVersion)."""
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node, "uid": self.uid, "resourceVersion": str(self.version),
                             "labels": dict(self.labels), "annotations": dict(self.annotations)}}

    def set_labels(self, labels: dict[str, str | None] | None = None, **changes: str | None) -> None:
        """Set (or, with None, remove) labels, in one change: ``labels`` by their keys, keywords with '_'
        for '/': multidp_io_rdma → multidp.io/rdma."""
        named = {key.replace("multidp_io_", "multidp.io/"): value for key, value in changes.items()}
        with self.cond:
            for name, value in {**(labels or {}), **named}.items():
                if value is None:
                    self.labels.pop(name, None)
                else:
                    self.labels[name] = value
            self.version += 1
            self.cond.notify_all()

    def set_annotations(self, annotations: dict[str, str | None]) -> None:
        """Set (or, with None, remove) node annotations, in one change."""
        with self.cond:
            for name, value in annotations.items():
                if value is None:
                    self.annotations.pop(name, None)
                else:
                    self.annotations[name] = value
            self.version += 1
            self.cond.notify_all()

    def drop_watches(self) -> None:
        """End every open watch as a broken connection would (the client must watch again)."""
        with self.cond:
            self._generation += 1
            self.cond.notify_all()
        self.slices.drop_watches()

    def kubeconfig(self, directory: Path) -> Path:
        """Write a kubeconfig for this server into ``directory``; its path."""
        path = directory / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        }))
        return path

    def close(self) -> None:
        """Drop the watches, stop serving and close the socket."""
        self.drop_watches()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: FakeApiServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, a kept-alive client waits for its delayed ACK
    # (40 ms) on every answer after the first. The real API server answers with TCP_NODELAY too.
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        api = self.server
        url = urlparse(self.path)
        query = parse_qs(url.query)
        slice_name = slices.slice_path(url.path)
        if slice_name is not None:  # recorded in slices.requests: node-label tests count these
            return self._slices("GET", slice_name, query)
        api.requests.append(self.path)
        claim = claim_path(url.path)
        if claim is not None:
            if api.stall_gets and not (api.forbidden or api.claims.forbidden_claims):
                return self._stall()
            return self._json(*api.claims.answer(*claim, forbidden=api.forbidden))
        if api.forbidden:
            status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                      "message": f'nodes "{api.node}" is forbidden: User "system:serviceaccount:x:y" cannot get'}
            return self._json(403, status)
        watch = url.path == "/api/v1/nodes" and query.get("watch") == ["true"]
        if (api.stall_watches if watch else api.stall_gets):
            return self._stall()
        if url.path == f"/api/v1/nodes/{api.node}":
            with api.cond:
                return self._json(200, api.node_object())
        if watch and api.watch_answer is not None:
            return self._misbehave(api.watch_answer)
        if watch:
            timeout = float(query["timeoutSeconds"][0]) if "timeoutSeconds" in query else None
            return self._watch(int(query.get("resourceVersion", ["0"])[0]), timeout,
                               query.get("allowWatchBookmarks") == ["true"])
        return self._json(404, {"kind": "Status", "code": 404, "message": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        self._write("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._write("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._write("DELETE")

    def _write(self, method: str) -> None:
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        name = slices.slice_path(url.path)
        if name is None:
            return self._json(405, status_body(405, "MethodNotAllowed", f"{method} {url.path}: not served here"))
        self._slices(method, name, parse_qs(url.query), body)

    def _slices(self, method: str, name: str, query: dict[str, list[str]], body: bytes = b"") -> None:
        """Answer a ResourceSlice request (as the other requests: 403 or a stall when the switches say so)."""
        api = self.server
        api.slices.requests.append(f"{method} {self.path}")
        watch = method == "GET" and query.get("watch") == ["true"]
        if api.forbidden:
            return self._json(*slices.forbidden())
        if method == "GET" and (api.stall_watches if watch else api.stall_gets):
            return self._stall()
        if not watch:
            return self._json(*api.slices.answer(method, name, query, body))
        if api.watch_answer is not None:
            return self._misbehave(api.watch_answer)
        try:
            events = api.slices.watch(query)
        except slices.BadRequest as exc:
            return self._json(400, status_body(400, "BadRequest", str(exc)))
        self._start_stream()
        try:
            for event in events:
                self._send_line(event)
        except (slices.WatchDropped, OSError):
            self.close_connection = True
            return  # no terminating chunk, as a broken connection
        self._send_chunk(b"")

    def _stall(self) -> None:
        """Say nothing, as over a half-open connection, until the watches are dropped or the server closes."""
        api = self.server
        with api.cond:
            api.stalled += 1
            generation = api._generation
            api.cond.wait_for(lambda: api._generation != generation)
        self.close_connection = True

    def _misbehave(self, how: str) -> None:
        if how == "gone":
            return self._json(410, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Gone",
                                    "code": 410, "message": "too old resource version"})
        self._start_stream()
        if how == "expired":
            self._send_line({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                         "reason": "Expired", "code": 410,
                                                         "message": "too old resource version: 1 (2)"}})
        elif how == "garbage":
            self._send_chunk(b"<html>502 Bad Gateway</html>\n")
        self._send_chunk(b"")  # the terminating chunk: a clean end

    def _json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send_line(self, event: dict[str, Any]) -> None:
        self._send_chunk(json.dumps(event).encode() + b"\n")

    def _watch(self, since: int, timeout: float | None, bookmarks: bool) -> None:
        api = self.server
        self._start_stream()
        deadline = time.monotonic() + timeout if timeout is not None else None
        with api.cond:
            generation, sent = api._generation, since
        while True:
            with api.cond:

                def changed(last: int = sent) -> bool:
                    return api.version > last or api._generation != generation

                left = deadline - time.monotonic() if deadline is not None else 30.0
                api.cond.wait_for(changed, timeout=max(left, 0))
                if api._generation != generation:
                    self.close_connection = True
                    return  # dropped: no terminating chunk, as a broken connection
                if api.version <= sent:
                    if deadline is None or time.monotonic() < deadline:
                        continue
                    bookmark = {"kind": "Node", "apiVersion": "v1", "metadata": {"resourceVersion": str(sent)}}
                    break  # timeoutSeconds passed: end the watch cleanly
                sent, event = api.version, {"type": "MODIFIED", "object": api.node_object()}
            self._send_line(event)
        if bookmarks:
            self._send_line({"type": "BOOKMARK", "object": bookmark})
        self._send_chunk(b"")
