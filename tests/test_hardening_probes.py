"""The metrics port under abuse: slow, idle or stuck clients cannot starve the kubelet's probes.

The DaemonSet points its liveness and readiness probes at this port, and anyone who can reach
the node can connect to it. Every test here holds many connections open the way an attacker
would, checks that /healthz and /readyz still answer within the probes' own timeout, and then
that the server's threads and memory are back where they were.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import faults_helpers
import pytest
import yaml
from faults_helpers import wait_full

from multidp.observe.metrics import HostCollector, ObservabilityServer
from multidp.testing import KubeletStandIn, SamplePlugin, running_host, wait_until

site, daemons = faults_helpers.site, faults_helpers.daemons  # fixtures

DAEMONSET = Path(__file__).resolve().parent.parent / "deploy" / "base" / "daemonset.yaml"
TRICKLE_EVERY_S = 0.5  # far below any per-read timeout: each byte would restart one
MEMORY_TOLERANCE_KB = 5 * 1024
THREAD_TOLERANCE = 2  # the test's own helper threads come and go


def probe_timeout_s() -> float:
    """The kubelet gives up on a probe after timeoutSeconds: that is the bound the port must meet."""
    container = yaml.safe_load(DAEMONSET.read_text())["spec"]["template"]["spec"]["containers"][0]
    return float(min(container[kind]["timeoutSeconds"] for kind in ("livenessProbe", "readinessProbe")))


PROBE_TIMEOUT_S = probe_timeout_s()


def proc_status(field: str, pid: int | str = "self") -> int:
    """A number from /proc/<pid>/status: VmRSS (kB), Threads."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def resident_kb() -> int:
    return proc_status("VmRSS")


def probe(port: int, path: str) -> int | str:
    """What the kubelet's HTTP probe sees: the status code, or why there was none in time.

    The kubelet's timeout covers the whole exchange; http.client's covers each socket call,
    so the whole is checked here too.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT_S)
    start = time.monotonic()
    try:
        conn.request("GET", path, headers={"User-Agent": "kube-probe/1.30", "Connection": "close"})
        response = conn.getresponse()
        response.read()
        took = time.monotonic() - start
        return response.status if took <= PROBE_TIMEOUT_S else f"answered after {took:.1f} s, past timeoutSeconds"
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


class Tricklers:
    """``count`` connections that each send one byte of a request that never ends, every
    TRICKLE_EVERY_S; a connection the server closes is opened again at once (a determined client)."""

    def __init__(self, port: int, count: int, idle: int = 0) -> None:
        self.port = port
        self.conns = [self._connect() for _ in range(count)]
        self.idle = [self._connect() for _ in range(idle)]  # connected, never send anything
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tricklers", daemon=True)

    def _connect(self) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        conn.setblocking(False)
        return conn

    def _run(self) -> None:
        while not self._stop.wait(TRICKLE_EVERY_S):
            for index, conn in enumerate(self.conns):
                try:
                    conn.send(b"G")
                except OSError:
                    conn.close()
                    try:
                        self.conns[index] = self._connect()
                        self.reconnects += 1
                    except OSError:
                        pass

    def __enter__(self) -> Tricklers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for conn in self.conns + self.idle:
            conn.close()


@pytest.fixture
def ready_port(socket_dir: Path) -> Iterator[int]:
    """The port of a ready host's observability server (the kubelet stand-in has registered it)."""
    kubelet = KubeletStandIn(socket_dir).start()
    try:
        with running_host(socket_dir, {"sample": SamplePlugin()}) as host:
            server = ObservabilityServer("127.0.0.1:0", host)
            server.start()
            try:
                port = int(server.server_address[1])
                wait_until(lambda: probe(port, "/readyz") == 200, what="the host ready")
                yield port
            finally:
                server.stop()
    finally:
        kubelet.shutdown()


def assert_probes_answer(port: int, rounds: int) -> None:
    for _ in range(rounds):
        assert probe(port, "/healthz") == 200
        assert probe(port, "/readyz") == 200
        time.sleep(TRICKLE_EVERY_S / 2)


def test_trickling_and_idle_clients_cannot_starve_the_probes(ready_port):
    threads_before, memory_before = threading.active_count(), resident_kb()
    # Far more slow connections than the server keeps, trickling or silent, reconnecting when dropped.
    count = 2 * ObservabilityServer.MAX_CONNECTIONS + 8
    with Tricklers(ready_port, count, idle=16):
        time.sleep(3 * TRICKLE_EVERY_S)  # every slow connection has sent something by now
        assert_probes_answer(ready_port, rounds=12)
        # Slow clients hold no thread of the server's (the trickler thread is the test's own).
        assert threading.active_count() <= threads_before + 1 + THREAD_TOLERANCE
    wait_until(lambda: threading.active_count() <= threads_before + THREAD_TOLERANCE, timeout=15,
               what="threads back to idle")
    assert resident_kb() <= memory_before + MEMORY_TOLERANCE_KB
    assert probe(ready_port, "/healthz") == 200


def closed_by_server(conn: socket.socket, within_s: float) -> float | None:
    """Trickle one byte every TRICKLE_EVERY_S until the server closes ``conn``: seconds it took, or None."""
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        try:
            conn.send(b"G")
            readable, _, _ = select.select([conn], [], [], TRICKLE_EVERY_S)
            if readable and conn.recv(4096) == b"":
                return time.monotonic() - start
        except OSError:  # reset, or broken pipe: closed
            return time.monotonic() - start
    return None


def test_a_trickled_request_is_cut_off_however_often_it_sends(ready_port):
    # A generous bound: each byte restarted the old per-read timeout, so such a client was never cut off.
    bound_s = 20.0
    with socket.create_connection(("127.0.0.1", ready_port), timeout=5) as conn:
        took = closed_by_server(conn, within_s=bound_s)
    assert took is not None, f"a client trickling a byte every {TRICKLE_EVERY_S} s still connected after {bound_s} s"


def test_probes_do_not_wait_behind_stuck_scrapes(ready_port, monkeypatch):
    """/metrics reads the host's state; if that is slow, scrapes pile up, and the probes must not."""
    release = threading.Event()
    real_collect = HostCollector.collect

    def stuck_collect(self):
        release.wait(60)
        return real_collect(self)

    monkeypatch.setattr(HostCollector, "collect", stuck_collect)
    threads_before = threading.active_count()
    scrapes = []
    try:
        for _ in range(2 * ObservabilityServer.MAX_CONNECTIONS):
            conn = socket.create_connection(("127.0.0.1", ready_port), timeout=5)
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: node\r\n\r\n")
            scrapes.append(conn)
        assert_probes_answer(ready_port, rounds=6)
        assert threading.active_count() <= threads_before + THREAD_TOLERANCE
    finally:
        release.set()
        for conn in scrapes:
            conn.close()
    wait_until(lambda: threading.active_count() <= threads_before + THREAD_TOLERANCE, timeout=15,
               what="threads back to idle")
    assert probe(ready_port, "/healthz") == 200


def test_the_daemon_answers_its_probes_under_abuse(kubelet, daemons):
    """The same abuse against ``multidp run`` itself, its threads and memory read from /proc."""
    port = faults_helpers.free_port()
    daemon = daemons(kubelet.directory, "--metrics-address", f"127.0.0.1:{port}")
    wait_full(kubelet)
    wait_until(lambda: probe(port, "/readyz") == 200, timeout=faults_helpers.START_S, what="the daemon ready")
    threads_before, memory_before = proc_status("Threads", daemon.pid), daemon.rss_kb()
    with Tricklers(port, 2 * ObservabilityServer.MAX_CONNECTIONS + 8, idle=16):
        time.sleep(3 * TRICKLE_EVERY_S)
        assert_probes_answer(port, rounds=6)
        assert proc_status("Threads", daemon.pid) <= threads_before + THREAD_TOLERANCE
    wait_until(lambda: proc_status("Threads", daemon.pid) <= threads_before + THREAD_TOLERANCE, timeout=15,
               what="the daemon's threads back to idle")
    assert daemon.rss_kb() <= memory_before + MEMORY_TOLERANCE_KB
    assert daemon.stop() == 0
    assert daemon.problems() == []


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n", b"200"),
    (b"HEAD /healthz HTTP/1.1\r\n\r\n", b"200"),
    (b"GET /healthz?verbose=1 HTTP/1.0\n\n", b"200"),
    (b"GET /nope HTTP/1.1\r\n\r\n", b"404"),
    (b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405"),
    (b"hello\r\n\r\n", b"400"),
    (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", b"431"),
])
def test_every_request_gets_one_answer_and_the_connection_closes(ready_port, request_bytes, status):
    with socket.create_connection(("127.0.0.1", ready_port), timeout=PROBE_TIMEOUT_S) as conn:
        conn.sendall(request_bytes)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 " + status + b" "), answer[:80]
    _, _, body = answer.partition(b"\r\n\r\n")
    assert (body == b"") == request_bytes.startswith(b"HEAD"), "HEAD gets the head only"
