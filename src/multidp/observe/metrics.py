"""``--metrics-address``: Prometheus metrics, /healthz and /readyz on one HTTP port.

Imported only when the address is set (prometheus-client costs about 4 MB).
Metrics are read from the host's own state at scrape time (see
:mod:`multidp.serving.stats`), so nothing on the gRPC paths talks to prometheus-client.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from multidp import __version__
from multidp.model import Health
from multidp.observe import probes

if TYPE_CHECKING:
    from multidp.host.host import Host

log = logging.getLogger(__name__)


class HostCollector:
    """Turns the host's state into metric families at each scrape."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def collect(self) -> Iterator[Metric]:
        host = self.host
        info = GaugeMetricFamily("multidp_info", "multidp version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        devices = GaugeMetricFamily("multidp_devices", "Devices advertised, by health",
                                    labels=["resource", "driver", "health"])
        allocations = CounterMetricFamily("multidp_allocations", "Allocate calls", labels=["resource"])
        errors = CounterMetricFamily("multidp_allocation_errors", "Allocate calls answered with an error",
                                     labels=["resource", "code"])
        durations = HistogramMetricFamily("multidp_allocate_duration_seconds", "Allocate handling time",
                                          labels=["resource"])
        registrations = CounterMetricFamily("multidp_registrations", "Register calls the kubelet accepted",
                                            labels=["resource"])
        reregistrations = CounterMetricFamily("multidp_reregistrations",
                                              "Registrations after the first (kubelet restarts)", labels=["resource"])
        for resource, endpoint in sorted(host.endpoints.items()):
            driver, snapshot = endpoint.driver, endpoint.snapshot
            healthy = len(snapshot.healthy_ids)
            devices.add_metric([resource, driver, Health.HEALTHY.value], healthy)
            devices.add_metric([resource, driver, Health.UNHEALTHY.value], len(snapshot.ids) - healthy)
            stats = endpoint.stats
            allocations.add_metric([resource], stats.allocations)
            for code, count in sorted(stats.errors.items()):
                errors.add_metric([resource, code], count)
            buckets, total = stats.histogram()
            durations.add_metric([resource], buckets, total)
            registrations.add_metric([resource], endpoint.registrations)
            reregistrations.add_metric([resource], max(0, endpoint.registrations - 1))
        yield from (devices, allocations, errors, durations, registrations, reregistrations)
        yield from self._drivers()

    def _drivers(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("multidp_driver_up", "1 for each driver's current state", labels=["driver", "state"])
        scans = CounterMetricFamily("multidp_driver_scans", "Scans of each driver", labels=["driver"])
        failures = CounterMetricFamily("multidp_driver_scan_failures", "Scans that raised or timed out",
                                       labels=["driver"])
        per_node = GaugeMetricFamily("multidp_driver_config", "The per-node config (configByLabel) each running "
                                     "driver was built with; '' for its section alone", labels=["driver", "config"])
        for name, config in sorted(self.host.node.per_node.items()):
            per_node.add_metric([name, config], 1)
        for name, status in sorted(self.host.statuses.items()):
            up.add_metric([name, status.state], 1)
            runner = self.host.runners.get(name)
            if runner is not None:
                scans.add_metric([name], runner.scans)
                failures.add_metric([name], runner.scan_failures)
        yield from (up, scans, failures, per_node)


class _Handler(BaseHTTPRequestHandler):
    server: ObservabilityServer
    timeout = 10  # seconds a client may stay silent before its connection (and thread) is dropped

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            ok, detail = (probes.health if path == "/healthz" else probes.readiness)(self.server.host)
            body = json.dumps({"ok": ok, **detail}, indent=1).encode()
            self._send(200 if ok else 503, body, "application/json")
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("http: " + format, *args)


class ObservabilityServer(ThreadingHTTPServer):
    """The HTTP server behind ``--metrics-address``.

    It has no authentication (bind it to a trusted network); it bounds what a
    client can hold: a silent connection is dropped after the handler's timeout,
    and beyond ``MAX_CONNECTIONS`` at once new ones are closed unanswered.
    """

    daemon_threads = True
    MAX_CONNECTIONS = 16

    def __init__(self, address: str, host: Host) -> None:
        bind_host, _, port = address.rpartition(":")
        super().__init__((bind_host, int(port)), _Handler)
        self.host = host
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(HostCollector(host))
        self._slots = threading.BoundedSemaphore(self.MAX_CONNECTIONS)
        self._thread = threading.Thread(target=self.serve_forever, name="metrics", daemon=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: refuse, do not queue
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def start(self) -> None:
        self._thread.start()
        log.info("metrics, /healthz and /readyz on http://%s:%d", *self.server_address[:2])

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
