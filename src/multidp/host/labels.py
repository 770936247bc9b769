"""This node's labels, live: ``multidp.io/<driver>=true|false`` and per-node config labels.

With ``NODE_NAME`` set and API access (in-cluster service account, or ``KUBECONFIG``), a thread reads and
watches this node's Node object and hands the host its labels whenever they change; the host derives which
drivers run (:func:`overrides_from`; an absent label, or one that is neither true nor false, a warning,
leaves the config default) and which per-node config each uses (:mod:`multidp.config.bylabel`).

lightkube (imported only here: about 5 MB, the official client about 15) supplies the authenticated HTTP
client; the two requests are made here, as lightkube's ``watch()`` sets no read timeout and, inside it,
starts the next request at once whenever one ends. Each watch asks the server to end it after
WATCH_TIMEOUT_S; one silent READ_SLACK_S longer has stalled (a dead connection): a warning, and the node is
read again at once, so a label change is applied at most 80 s after its connection silently died. Any
other failure keeps the last known labels and retries after the time since the last good event, from
BACKOFF_FIRST_S to BACKOFF_MAX_S: the delay about doubles while failures go on, one log line per doubling.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from multidp.config.bylabel import ANNOTATION_PREFIX
from multidp.kubeapi import ApiProblem, NoCredentials, check_status, json_object, make_client, read_at_most
from multidp.names import LABEL_PREFIX

log = logging.getLogger(__name__)

WATCH_TIMEOUT_S = 60.0  # timeoutSeconds: the server ends each watch by then (also keeps idle NATs from dropping it)
READ_SLACK_S = 10.0  # a watch silent this much longer than that is stalled
REQUEST_TIMEOUT_S = 10.0  # connecting, and reading the answer to a GET
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
MAX_ANSWER_BYTES = 4 << 20  # one Node is tens of kB

Overrides = dict[str, bool | None]  # driver -> label says on / off / nothing
Labels = dict[str, str]


class Stalled(Exception):
    """A watch said nothing for longer than the server should have kept it open."""


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
            log.error("node label %s%s=%r is neither true nor false: ignored; the driver keeps its last good "
                      "state (the config's default if it had none)", LABEL_PREFIX, driver, value)
        result[driver] = None
    return result


class NodeApi:
    """GET and watch one Node over an authenticated HTTP client, every read under a timeout."""

    def __init__(self, http: Any, node: str) -> None:
        self.http = http  # an httpx (or httpx2) Client, as lightkube builds it
        self.httpx = importlib.import_module(type(self.http).__module__.partition(".")[0])
        self.node = node

    def _timeout(self, read_s: float | None) -> Any:  # connecting, writing: REQUEST_TIMEOUT_S
        return self.httpx.Timeout(REQUEST_TIMEOUT_S, read=read_s or REQUEST_TIMEOUT_S)

    def read(self) -> tuple[Labels, str]:
        """The node's labels and resourceVersion."""
        try:
            with self.http.stream("GET", f"/api/v1/nodes/{quote(self.node)}", timeout=self._timeout(None)) as answer:
                check_status(answer)
                body = read_at_most(answer, MAX_ANSWER_BYTES)
        except self.httpx.HTTPError as exc:  # cannot connect, timed out, connection broken
            raise ApiProblem(type(exc).__name__, str(exc) or "no detail") from exc
        if len(body) > MAX_ANSWER_BYTES:
            raise ApiProblem("garbage", f"the Node is over {MAX_ANSWER_BYTES >> 20} MiB")
        node = json_object(body, "the Node")
        return _labels_of(node, self.node), _version_of(node)

    def watch(self, version: str) -> Iterator[dict[str, Any]]:
        """The watch's events from ``version``, until the server ends it; Stalled when it falls silent."""
        read_s = WATCH_TIMEOUT_S + READ_SLACK_S
        params = {"watch": "true", "fieldSelector": f"metadata.name={self.node}", "resourceVersion": version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(max(1, round(WATCH_TIMEOUT_S)))}
        try:
            with self.http.stream("GET", "/api/v1/nodes", params=params, timeout=self._timeout(read_s)) as answer:
                check_status(answer)
                for line in _lines(answer.iter_bytes()):
                    yield json_object(line, "a watch event")
        except self.httpx.ReadTimeout as exc:
            raise Stalled(f"its watch stalled: nothing for {read_s:g} s, although the API server was asked to end "
                          f"it after {WATCH_TIMEOUT_S:g} s (a dead connection?)") from exc
        except self.httpx.HTTPError as exc:
            raise ApiProblem(type(exc).__name__, str(exc) or "no detail") from exc


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    buffer = b""
    for chunk in chunks:
        *lines, buffer = (buffer + chunk).split(b"\n")
        yield from (line for line in lines if line.strip())
        if len(buffer) > MAX_ANSWER_BYTES:
            raise ApiProblem("garbage", f"a watch event is over {MAX_ANSWER_BYTES >> 20} MiB")
    if buffer.strip():
        yield buffer


def _labels_of(node: dict[str, Any], name: str) -> Labels:
    """The Node's labels, and its annotations under ANNOTATION_PREFIX (configByLabel can pick by either)."""
    metadata = node.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    if metadata.get("name") != name or not _strings(labels) or not _strings(annotations):
        raise ApiProblem("garbage", f"not the labels of Node {name}: {str(node)[:100]}")
    return {**labels, **{ANNOTATION_PREFIX + key: value for key, value in annotations.items()}}


def _strings(mapping: object) -> bool:
    return isinstance(mapping, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())


def _version_of(obj: dict[str, Any]) -> str:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    if not isinstance(version, str) or not version:
        raise ApiProblem("garbage", f"no resourceVersion in {str(obj)[:100]}")
    return version


class NodeLabelWatcher:
    """Follows this node's labels and calls ``on_change(labels)`` whenever they change."""

    def __init__(self, node_name: str, on_change: Callable[[Labels], None], environ: Mapping[str, str],
                 client_factory: Callable[[Mapping[str, str]], Any] = make_client) -> None:
        self.node_name = node_name
        self.on_change = on_change
        self.environ = environ
        self.client_factory = client_factory
        self.current: Labels | None = None
        self.connected = False  # the node was read at least once
        self._last_good = time.monotonic()  # a read or event that moved on, or a watch the server ended on time
        self._logged: tuple[str, float] | None = None  # the failing state last logged: (kind, delay)
        self._api: NodeApi
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-labels", daemon=True)

    def start(self) -> bool:
        """Start watching; False (one error line) when no credentials exist: label mode is off."""
        try:
            self._api = NodeApi(self.client_factory(self.environ), self.node_name)
        except (NoCredentials, AttributeError, ImportError) as exc:  # the last two: a lightkube unlike ours
            what = "no Kubernetes credentials were found" if isinstance(exc, NoCredentials) else "lightkube failed"
            log.error("NODE_NAME is %s but %s (%s); node labels are not followed, the config decides which drivers "
                      "run", self.node_name, what, exc)
            return False
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()

    def _apply(self, labels: Mapping[str, str] | None) -> None:
        current = dict(labels or {})
        if current != self.current:  # status updates arrive often; label changes rarely
            self.on_change(dict(current))
            self.current = current  # only once applied: if on_change raised, the next read tries again

    def _run(self) -> None:
        version: str | None = None  # None: read the node (again) before watching
        try:
            while not self._stop.is_set():
                try:
                    if version is None:
                        labels, version = self._api.read()
                        if not self.connected:
                            log.info("following the labels of node %s", self.node_name)
                        self.connected = True
                        self._apply(labels)
                    version = self._follow(version)
                except Exception as exc:  # noqa: BLE001 - every API failure: keep the last set, back off
                    version = None
                    if self._stop.is_set():
                        return  # stopping: whatever broke is no news
                    if isinstance(exc, Stalled):  # it took the whole read timeout: read the node again at once
                        log.warning("node %s: %s; reading it again", self.node_name, exc)
                    elif self._stop.wait(self._back_off(exc)):
                        return
        finally:
            self._api.http.close()  # its pooled connections

    def _follow(self, version: str) -> str | None:
        """One watch from ``version``; the version to go on from. Raises unless it ended on time or had news."""
        started, news = time.monotonic(), False
        for event in self._api.watch(version):
            if self._stop.is_set():
                return None
            kind, obj = event.get("type"), event.get("object")
            if kind == "ERROR" and isinstance(obj, dict):
                raise ApiProblem(f"watch ERROR {obj.get('code')}", str(obj.get("message")))  # 410: read the node again
            if kind not in ("ADDED", "MODIFIED", "BOOKMARK") or not isinstance(obj, dict):
                raise ApiProblem("garbage" if kind != "DELETED" else "Node deleted", f"a {kind} event")
            if kind != "BOOKMARK":
                self._apply(_labels_of(obj, self.node_name))
            new = _version_of(obj)
            if new != version:  # a replayed event is no sign of health
                news, version = True, new
                self._good()
        lasted = time.monotonic() - started
        if not news and lasted < WATCH_TIMEOUT_S / 2:
            raise ApiProblem("watch ended early", f"after {lasted:.1f} s without an event")
        if not news:
            self._good()  # a quiet node: the server ended the watch when asked
        return version

    def _good(self) -> None:
        self._last_good = time.monotonic()
        if self._logged is not None:
            log.info("node %s: following its labels again", self.node_name)
        self._logged = None

    def _back_off(self, exc: Exception) -> float:
        """How long to wait before the next try: the time since the last good event, within the bounds.
        Logged when the failure starts, when the delay has doubled since the last line, or when its kind
        changes; otherwise at DEBUG."""
        if self._logged is None:  # the first failure after a good stretch: the backoff starts at its floor
            self._last_good = time.monotonic()
        delay = min(BACKOFF_MAX_S, max(BACKOFF_FIRST_S, time.monotonic() - self._last_good))
        kind = exc.kind if isinstance(exc, ApiProblem) else type(exc).__name__
        why = str(exc) if isinstance(exc, ApiProblem) else f"{type(exc).__name__}: {exc}"
        new_step = self._logged is None or kind != self._logged[0] or delay >= 2 * self._logged[1]
        if new_step:
            self._logged = (kind, delay)
        log.log(logging.WARNING if new_step else logging.DEBUG, "node %s: cannot read or watch its labels "
                "(%s); keeping the last known set, retrying in %.1f s", self.node_name, why, delay)
        return delay
