"""The Kubernetes API client the host's readers share: lightkube builds it, the requests are ours.

lightkube (imported only when a reader starts: about 5 MB, the official client about 15) supplies the
authenticated HTTP client from the in-cluster service account, else ``KUBECONFIG``; the node-label watcher
(:mod:`multidp.host.labels`) and the DRA claim reader (:mod:`multidp.dra.claims`) make their own requests
on it, each under a timeout, and read answers through the helpers here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any


class NoCredentials(Exception):
    """No in-cluster service account and no KUBECONFIG."""


class ApiProblem(Exception):
    """A failed read or watch; ``kind`` (``HTTP 403``, ``garbage``, ``ConnectError``) is what repeats."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        super().__init__(f"{kind}: {detail}")


def make_client(environ: Mapping[str, str]) -> Any:
    """An HTTP client for the API server, built by lightkube from the service account, else KUBECONFIG
    (auth, TLS, the server's address); NoCredentials if neither works.

    lightkube builds the client, the requests are ours: its ``watch`` reads without a timeout (a
    half-open connection hangs it for good) and starts the next request itself when one ends (a watch
    that fails at once loops), so callers make their requests on the client directly.
    """
    from lightkube.config.client_adapter import Client, ConnectionParams
    from lightkube.config.kubeconfig import KubeConfig

    def client(config: KubeConfig) -> Any:
        chosen = config.get()
        if chosen is None:
            raise ValueError("it has no current context")
        return Client(chosen, ConnectionParams(trust_env=False))

    if environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            return client(KubeConfig.from_service_account())
        except Exception as exc:  # noqa: BLE001 - lightkube raises several kinds; all mean "not usable"
            in_cluster_error = f"in-cluster config unusable: {exc}"
    else:
        in_cluster_error = "not running in a cluster (KUBERNETES_SERVICE_HOST is unset)"
    kubeconfig = environ.get("KUBECONFIG")
    if not kubeconfig:
        raise NoCredentials(f"{in_cluster_error}, and KUBECONFIG is unset")
    try:
        return client(KubeConfig.from_file(kubeconfig.split(":")[0]))
    except Exception as exc:  # noqa: BLE001
        raise NoCredentials(f"{in_cluster_error}; KUBECONFIG {kubeconfig}: {exc}") from exc


def check_status(answer: Any) -> None:
    if answer.status_code == 200:
        return
    body = read_at_most(answer, 1 << 16)
    try:
        message = str(json.loads(body)["message"])  # a Status
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode(errors="replace")
    raise ApiProblem(f"HTTP {answer.status_code}", message)  # 410 Gone too: read the node again


def read_at_most(answer: Any, limit: int) -> bytes:
    body = bytearray()  # never all of an endless answer: at most limit + 1 bytes
    for chunk in answer.iter_bytes():
        body += chunk
        if len(body) > limit:
            break
    return bytes(body[:limit + 1])


def json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ApiProblem("garbage", f"{what} is not a JSON object: {data[:60]!r}")
    return value


class LazyClient:
    """One API client, made by :func:`make_client` on first use (lightkube is imported then), for every
    reader and writer of one DRA driver; NoCredentials until the credentials work."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self._http: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._http is None:
                self._http = make_client(self.environ)
            return self._http
