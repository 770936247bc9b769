"""``--metrics-address``: Prometheus metrics, /healthz and /readyz on one HTTP port.

Imported only when the address is set (prometheus-client costs about 4 MB).
Metrics are read from the host's own state at scrape time (see
:mod:`multidp.serving.stats`), so nothing on the gRPC paths talks to prometheus-client.
"""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from multidp import __version__
from multidp.host.retry import FailedStatus
from multidp.model import Health
from multidp.observe import httpserver, probes
from multidp.observe.httpserver import Answer, BoundedHTTPServer, Handler
from multidp.plugins.factory import DISABLED, FAILED, NOT_SELECTED, RUNNING

if TYPE_CHECKING:
    from multidp.host.host import Host

log = logging.getLogger(__name__)

RETRYING = "retrying"  # the state a failed driver that is tried again shows in multidp_driver_up
STATES = (RUNNING, RETRYING, FAILED, DISABLED, NOT_SELECTED)
NO_CONFIG = "(none)"  # multidp_driver_config's config for a section alone: no config name has parentheses


class HostCollector:
    """Turns the host's state into metric families at each scrape."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def collect(self) -> Iterator[Metric]:
        host = self.host
        info = GaugeMetricFamily("multidp_build_info", "multidp's version and the Python it runs on",
                                 labels=["version", "pythonversion"])
        info.add_metric([__version__, platform.python_version()], 1)
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
        yield from self._dra()
        yield from self._drivers()

    def _dra(self) -> Iterator[Metric]:
        """Drivers served through DRA: devices by health, prepared claims, Prepare and Unprepare calls."""
        devices = GaugeMetricFamily("multidp_dra_devices", "Devices offered through DRA, by health",
                                    labels=["driver", "dra_driver", "health"])
        claims = GaugeMetricFamily("multidp_dra_prepared_claims", "Claims prepared on this node",
                                   labels=["driver", "dra_driver"])
        calls = {kind: (SummaryMetricFamily(f"multidp_dra_{kind}_duration_seconds",
                                            f"Node{kind.capitalize()}Resources handling time per claim",
                                            labels=["driver", "dra_driver"]),
                        CounterMetricFamily(f"multidp_dra_{kind}_errors", f"Claims whose {kind} failed",
                                            labels=["driver", "dra_driver"]))
                 for kind in ("prepare", "unprepare")}
        for frontend in self.host.dra_frontends():
            names = [frontend.driver, frontend.dra_name]
            states = frontend.health().values()
            healthy = sum(1 for s in states if s.healthy)
            devices.add_metric([*names, Health.HEALTHY.value], healthy)
            devices.add_metric([*names, Health.UNHEALTHY.value], len(states) - healthy)
            claims.add_metric(names, len(frontend.preparer.claims))
            s = frontend.stats
            calls["prepare"][0].add_metric(names, s.prepares, s.prepare_seconds)
            calls["prepare"][1].add_metric(names, s.prepare_errors)
            calls["unprepare"][0].add_metric(names, s.unprepares, s.unprepare_seconds)
            calls["unprepare"][1].add_metric(names, s.unprepare_errors)
        yield from (devices, claims, *(family for pair in calls.values() for family in pair))

    def _drivers(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("multidp_driver_up", "1 for each driver's current state ('retrying': failed, "
                               "and tried again later; 'failed': not retried)", labels=["driver", "state"])
        retries = self.host.retries
        attempts = CounterMetricFamily("multidp_driver_start_attempts", "Creations of each driver tried",
                                       labels=["driver"])
        start_failures = CounterMetricFamily("multidp_driver_start_failures", "Creations of each driver that failed",
                                             labels=["driver"])
        next_try = GaugeMetricFamily("multidp_driver_next_retry_seconds", "Seconds until a failed driver is "
                                     "tried again", labels=["driver"])
        for name, count in sorted(retries.attempts.items()):
            attempts.add_metric([name], count)
            start_failures.add_metric([name], retries.failures[name])
        scans = CounterMetricFamily("multidp_driver_scans", "Scans of each driver", labels=["driver"])
        failures = CounterMetricFamily("multidp_driver_scan_failures", "Scans that raised or timed out",
                                       labels=["driver"])
        per_node = GaugeMetricFamily("multidp_driver_config", "The per-node config (configByLabel) each running "
                                     f"driver was built with; {NO_CONFIG!r} for its section alone",
                                     labels=["driver", "config"])
        for name, config in sorted(self.host.node.per_node.items()):
            per_node.add_metric([name, config or NO_CONFIG], 1)
        refused = GaugeMetricFamily("multidp_driver_config_refused", "1 while a driver's per-node config cannot "
                                    "be used: its label names no config, or the config it names fails (the driver "
                                    "keeps what it ran with)", labels=["driver"])
        for name, is_refused in sorted(self.host.node.config_refused().items()):
            refused.add_metric([name], 1 if is_refused else 0)
        for name, status in sorted(self.host.statuses.items()):
            retrying = isinstance(status, FailedStatus) and status.state == FAILED and status.retrying
            current = RETRYING if retrying else status.state
            for state in STATES:  # every state, 0 but the current one: a state left shows as 0, not as a gap
                up.add_metric([name, state], 1 if state == current else 0)
            if isinstance(status, FailedStatus) and retrying:
                next_try.add_metric([name], status.retry_in() or 0.0)
            runner = self.host.runners.get(name)
            if runner is not None:
                scans.add_metric([name], runner.scans)
                failures.add_metric([name], runner.scan_failures)
        yield from (up, scans, failures, per_node, refused, attempts, start_failures, next_try)


class ObservabilityServer:
    """The HTTP server behind ``--metrics-address``: /metrics, /healthz and /readyz.

    It has no authentication (bind it to a trusted network). What a client can hold, and why
    the probes stay answerable whatever other clients do, is :mod:`multidp.observe.httpserver`'s
    business; the probes have their own lane, so they never wait behind a scrape.
    """

    MAX_CONNECTIONS = httpserver.MAX_CONNECTIONS

    def __init__(self, address: str, host: Host, probes_only: bool = False) -> None:
        bind_host, _, port = address.rpartition(":")
        self.host = host
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(HostCollector(host))
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        PlatformCollector(registry=self.registry)
        lanes: dict[str, dict[str, Handler]] = {"probes": {"/healthz": self._health, "/readyz": self._readiness}}
        if not probes_only:
            lanes["scrape"] = {"/metrics": self._metrics}
        self._http = BoundedHTTPServer((bind_host, int(port)), lanes, PROBES_ONLY if probes_only else NOT_FOUND,
                                       name="probes" if probes_only else "metrics")
        self.what = "/healthz and /readyz" if probes_only else "metrics, /healthz and /readyz"
        self.server_address = self._http.server_address

    def _metrics(self) -> Answer:
        return Answer(200, CONTENT_TYPE_LATEST, generate_latest(self.registry))

    def _health(self) -> Answer:
        return _probe_answer(*probes.health(self.host))

    def _readiness(self) -> Answer:
        return _probe_answer(*probes.readiness(self.host))

    def start(self) -> None:
        self._http.start()
        log.info("%s on http://%s:%d", self.what, *self.server_address[:2])

    def stop(self) -> None:
        self._http.stop()


NOT_FOUND = Answer(404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n")
PROBES_ONLY = Answer(404, "text/plain",
                     b"not found: this listener serves /healthz and /readyz (metrics: metricsAddress)\n")


def _probe_answer(ok: bool, detail: dict[str, Any]) -> Answer:
    return Answer(200 if ok else 503, "application/json", json.dumps({"ok": ok, **detail}, indent=1).encode())
