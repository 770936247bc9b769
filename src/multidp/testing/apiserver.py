"""A fake Kubernetes API server, for testing node-label mode without a cluster.

:class:`FakeApiServer` serves one Node on 127.0.0.1 (a free port) from a thread
of its own, and writes a kubeconfig that points at it: the host's real
lightkube client reads and watches the Node's labels as it would on a node.
multidp's node-label tests and ``bench/run.py`` use it; so may a driver's tests
that turn it on and off by label.

Enough of the real protocol for lightkube: GET /api/v1/nodes/<name> answers the
Node; GET /api/v1/nodes?watch=true&fieldSelector=metadata.name=<name> streams
JSON lines ({"type": "MODIFIED", "object": <Node>}) as labels change. Tests can
change labels, drop the watch connection, or answer 403 to everything.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse


class FakeApiServer(ThreadingHTTPServer):
    """One Node named ``node`` with ``labels``, served from the moment it is made; :meth:`close` when done.

    ``url`` is its address, :meth:`kubeconfig` a kubeconfig for it (``KUBECONFIG``). Tests may change
    ``forbidden`` (True: every request answered 403) and read ``requests`` (every path asked for).
    """

    daemon_threads = True

    def __init__(self, node: str, labels: dict[str, str] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.node = node
        self.labels = dict(labels or {})
        self.version = 1
        self.forbidden = False
        self.requests: list[str] = []
        self.cond = threading.Condition()
        self._generation = 0  # bumped to drop every open watch
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def node_object(self) -> dict[str, Any]:
        """The Node as the API server answers it (its labels, its resourceVersion)."""
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node, "resourceVersion": str(self.version), "labels": dict(self.labels)}}

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

    def drop_watches(self) -> None:
        """End every open watch as a broken connection would (the client must watch again)."""
        with self.cond:
            self._generation += 1
            self.cond.notify_all()

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

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        api = self.server
        url = urlparse(self.path)
        query = parse_qs(url.query)
        api.requests.append(self.path)
        if api.forbidden:
            status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                      "message": f'nodes "{api.node}" is forbidden: User "system:serviceaccount:x:y" cannot get'}
            return self._json(403, status)
        if url.path == f"/api/v1/nodes/{api.node}":
            with api.cond:
                return self._json(200, api.node_object())
        if url.path == "/api/v1/nodes" and query.get("watch") == ["true"]:
            return self._watch(int(query.get("resourceVersion", ["0"])[0]))
        return self._json(404, {"kind": "Status", "code": 404, "message": "not found"})

    def _json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _watch(self, since: int) -> None:
        api = self.server
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with api.cond:
            generation, sent = api._generation, since
        while True:
            with api.cond:

                def changed(last: int = sent) -> bool:
                    return api.version > last or api._generation != generation

                api.cond.wait_for(changed, timeout=30)
                if api._generation != generation:
                    self.close_connection = True
                    return  # dropped: no terminating chunk, as a broken connection
                if api.version <= sent:
                    continue
                sent, line = api.version, json.dumps({"type": "MODIFIED", "object": api.node_object()}) + "\n"
            data = line.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
