"""This node's labels, live: ``multidp.io/<driver>=true|false`` and per-node config labels.

With ``NODE_NAME`` set and API access (in-cluster service account, or
``KUBECONFIG``), a thread watches this node's Node object through lightkube
(imported only here: it costs about 5 MB, the official client about 15) and
hands the host the node's labels whenever they change; the host derives what
they mean: which drivers run (:func:`overrides_from`; an absent label, or one
that is neither true nor false, a warning, leaves the config default) and which
per-node config each driver uses (:mod:`multidp.config.bylabel`).
API unreachable or watch broken: the last known labels stay in force and the
watch is retried with backoff, with a log line saying why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from multidp.names import LABEL_PREFIX

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0

Overrides = dict[str, bool | None]  # driver -> label says on / off / nothing
Labels = dict[str, str]


class NoCredentials(Exception):
    """No in-cluster service account and no KUBECONFIG."""


def overrides_from(labels: Mapping[str, str] | None, drivers: Sequence[str],
                   warned: set[tuple[str, str]] | None = None) -> Overrides:
    """What the node's labels say about each driver."""
    result: Overrides = {}
    for driver in drivers:
        value = (labels or {}).get(LABEL_PREFIX + driver)
        lowered = value.strip().lower() if value is not None else None
        if lowered in ("true", "false"):
            result[driver] = lowered == "true"
            continue
        if value is not None and (warned is None or (driver, value) not in warned):
            if warned is not None:
                warned.add((driver, value))
            log.warning("node label %s%s=%r is neither true nor false; using the config default",
                        LABEL_PREFIX, driver, value)
        result[driver] = None
    return result


def make_client(environ: Mapping[str, str]) -> Any:
    """A lightkube client from the service account, else KUBECONFIG; NoCredentials if neither."""
    from lightkube import Client
    from lightkube.config.kubeconfig import KubeConfig

    if environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            return Client(KubeConfig.from_service_account(), trust_env=False)
        except Exception as exc:  # noqa: BLE001 - lightkube raises several kinds; all mean "not usable"
            in_cluster_error = f"in-cluster config unusable: {exc}"
    else:
        in_cluster_error = "not running in a cluster (KUBERNETES_SERVICE_HOST is unset)"
    kubeconfig = environ.get("KUBECONFIG")
    if not kubeconfig:
        raise NoCredentials(f"{in_cluster_error}, and KUBECONFIG is unset")
    try:
        return Client(KubeConfig.from_file(kubeconfig.split(":")[0]), trust_env=False)
    except Exception as exc:  # noqa: BLE001
        raise NoCredentials(f"{in_cluster_error}; KUBECONFIG {kubeconfig}: {exc}") from exc


class NodeLabelWatcher:
    """Follows this node's labels and calls ``on_change(labels)`` whenever they change."""

    def __init__(self, node_name: str, on_change: Callable[[Labels], None], environ: Mapping[str, str],
                 client_factory: Callable[[Mapping[str, str]], Any] = make_client) -> None:
        self.node_name = node_name
        self.on_change = on_change
        self.environ = environ
        self.client_factory = client_factory
        self.current: Labels | None = None
        self.connected = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-labels", daemon=True)

    def start(self) -> bool:
        """Start watching; False (one error line) when no credentials exist: label mode is off."""
        try:
            self._client = self.client_factory(self.environ)
        except NoCredentials as exc:
            log.error("NODE_NAME is %s but no Kubernetes credentials were found (%s); node labels are not "
                      "followed, the config decides which drivers run", self.node_name, exc)
            return False
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()

    def _apply(self, labels: Mapping[str, str] | None) -> None:
        current = dict(labels or {})
        if current != self.current:  # status updates arrive often; label changes rarely
            self.current = current
            self.on_change(dict(current))

    def _run(self) -> None:
        from lightkube.resources.core_v1 import Node

        delay = BACKOFF_FIRST_S
        while not self._stop.is_set():
            try:
                node = self._client.get(Node, name=self.node_name)
                self._note_connected()
                self._apply(node.metadata.labels)
                delay = BACKOFF_FIRST_S
                version = node.metadata.resourceVersion
                for _event, node in self._client.watch(Node, fields={"metadata.name": self.node_name},
                                                       resource_version=version):
                    if self._stop.is_set():
                        return
                    self._apply(node.metadata.labels)
            except Exception as exc:  # noqa: BLE001 - every API failure: keep the last set, retry
                self._note_failure(exc, delay)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, BACKOFF_MAX_S)

    def _note_connected(self) -> None:
        if not self.connected:
            log.info("following the labels of node %s", self.node_name)
        self.connected = True

    def _note_failure(self, exc: Exception, delay: float) -> None:
        status = getattr(getattr(exc, "status", None), "code", None)
        why = f"HTTP {status}: {exc}" if status else f"{type(exc).__name__}: {exc}"
        level = logging.WARNING if self.connected or delay == BACKOFF_FIRST_S else logging.DEBUG
        log.log(level, "node %s: cannot read or watch its labels (%s); keeping the last known set, "
                "retrying in %.1f s", self.node_name, why, delay)
        self.connected = False
