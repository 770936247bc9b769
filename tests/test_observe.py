"""Metrics, /healthz and /readyz report what the kubelet stand-in observed."""

from __future__ import annotations

import json
import socket

import grpc
import pytest
from http_helpers import get, metric
from prometheus_client.parser import text_string_to_metric_families

from multidp.api import pb
from multidp.observe.metrics import ObservabilityServer
from multidp.testing import AllocationFailed, KubeletStandIn, SamplePlugin, running_host, wait_until

WIDGET = "example.com/widget"


@pytest.fixture
def observed(socket_dir):
    """A host with its observability server, and a kubelet that is not there yet."""
    with running_host(socket_dir, {"good": SamplePlugin(), "broken": SamplePlugin()},
                      drivers={"broken": {"pollInterval": "often"}}) as host:
        server = ObservabilityServer("127.0.0.1:0", host)
        server.start()
        try:
            yield host, f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.stop()


def test_readyz_waits_for_registration_and_reports_failed_drivers(observed, socket_dir):
    host, base = observed
    code, body = get(base + "/readyz")
    assert code == 503
    report = json.loads(body)
    assert f"{WIDGET}: registration" in report["waiting_for"]
    assert "broken" in report["failed_drivers"]
    assert get(base + "/healthz")[0] == 200
    kubelet = KubeletStandIn(socket_dir).start()
    try:
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
        wait_until(lambda: json.loads(get(base + "/readyz")[1])["waiting_for"] == [], what="registered")
        # An enabled driver that failed keeps the pod unready (issue 13 item 6), a config error included.
        code, body = get(base + "/readyz")
        assert code == 503 and json.loads(body)["failed_drivers"]["broken"].startswith("bad config")
        assert get(base + "/healthz")[0] == 200
    finally:
        kubelet.shutdown()


def test_metrics_match_what_the_kubelet_saw(observed, socket_dir):
    host, base = observed
    kubelet = KubeletStandIn(socket_dir).start()
    try:
        kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)
        kubelet.allocate(WIDGET, 2)
        kubelet.allocate(WIDGET, 1)
        with pytest.raises(AllocationFailed):
            kubelet.allocate(WIDGET, 5)  # the kubelet side refuses: not enough devices
        with pytest.raises(grpc.RpcError):
            kubelet.stub(WIDGET).Allocate(pb.AllocateRequest(container_requests=[
                pb.ContainerAllocateRequest(devices_ids=["ghost"])]), timeout=5)
        host.runners["good"].driver.hardware.set_health(WIDGET, "widget-1", False)
        kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 3)
        kubelet.restart()
        kubelet.wait_registered(WIDGET, count=2)
        # The kubelet records Register before the answer reaches the plugin, which counts it then.
        wait_until(lambda: metric(get(base + "/metrics")[1], "multidp_registrations_total", resource=WIDGET) == 2,
                   what="the second registration counted")
        code, text = get(base + "/metrics")
        assert code == 200
        assert metric(text, "multidp_devices", resource=WIDGET, driver="good", health="Healthy") == 3
        assert metric(text, "multidp_devices", resource=WIDGET, driver="good", health="Unhealthy") == 1
        assert metric(text, "multidp_allocations_total", resource=WIDGET) == 3
        assert metric(text, "multidp_allocation_errors_total", resource=WIDGET, code="INVALID_ARGUMENT") == 1
        assert metric(text, "multidp_allocate_duration_seconds_count", resource=WIDGET) == 3
        assert metric(text, "multidp_allocate_duration_seconds_bucket", resource=WIDGET, le="+Inf") == 3
        assert metric(text, "multidp_registrations_total", resource=WIDGET) == 2
        assert metric(text, "multidp_reregistrations_total", resource=WIDGET) == 1
        assert metric(text, "multidp_driver_up", driver="broken", state="failed") == 1
        assert metric(text, "multidp_driver_up", driver="good", state="running") == 1
        assert metric(text, "multidp_driver_scans_total", driver="good") >= 1
    finally:
        kubelet.shutdown()


def test_unknown_path_is_404(observed):
    assert get(observed[1] + "/nope")[0] == 404


def test_idle_and_excess_connections_are_bounded(observed):
    host, base = observed
    port = int(base.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(ObservabilityServer.MAX_CONNECTIONS)]
    try:
        # Every slot is held by a silent client: one more connection crowds out the oldest (closed
        # unanswered) and is answered, so silent clients cannot keep the kubelet's probes out.
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        extra.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert extra.recv(100).startswith(b"HTTP/1.0 200 ")
        extra.close()
        idle[0].settimeout(5)
        assert idle[0].recv(100) == b""
    finally:
        for conn in idle:
            conn.close()
    wait_until(lambda: get(base + "/healthz")[0] == 200, what="slots free again")


def scrape(host) -> str:
    """/metrics of ``host``, from an ObservabilityServer started for the one request."""
    server = ObservabilityServer("127.0.0.1:0", host)
    server.start()
    try:
        return get(f"http://127.0.0.1:{server.server_address[1]}/metrics")[1]
    finally:
        server.stop()


def test_the_per_node_config_each_driver_runs_is_a_metric(socket_dir):
    by_label = {"label": "example.com/widget-config", "default": "two",
                "configs": {"two": {"resources": {WIDGET: {"count": 2}}}}}
    plugins = {"chosen": SamplePlugin(), "plain": SamplePlugin()}
    drivers = {"chosen": {"resources": {WIDGET: {"count": 1}}, "configByLabel": by_label},
               "plain": {"resources": {"example.com/plain": {"count": 1}}}}
    with running_host(socket_dir, plugins, drivers=drivers) as host:
        text = scrape(host)
    assert metric(text, "multidp_driver_config", driver="chosen", config="two") == 1
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == "multidp_driver_config"]
    assert [s.labels["driver"] for s in samples] == ["chosen"]  # a driver without configByLabel has none


def test_metrics_name_every_driver_state_and_leave_no_label_empty(socket_dir):
    by_label = {"label": "example.com/widget-config", "configs": {"two": {"resources": {WIDGET: {"count": 2}}}}}
    plugins = {"chosen": SamplePlugin(), "off": SamplePlugin()}
    drivers = {"chosen": {"resources": {WIDGET: {"count": 1}}, "configByLabel": by_label},
               "off": {"enabled": False}}
    with running_host(socket_dir, plugins, drivers=drivers) as host:
        host.apply_labels({"example.com/widget-config": "typo"})  # names no config: refused, section alone
        text = scrape(host)
    states = {s.labels["state"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "multidp_driver_up" and s.labels["driver"] == "off"}
    assert states == {"running": 0, "retrying": 0, "failed": 0, "disabled": 1, "not selected": 0}
    assert metric(text, "multidp_driver_config", driver="chosen", config="(none)") == 1
    assert metric(text, "multidp_driver_config_refused", driver="chosen") == 1
    build = [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == "multidp_build_info"]
    assert len(build) == 1 and build[0].labels["version"] and build[0].labels["pythonversion"]
    assert metric(text, "process_resident_memory_bytes") > 0 and "python_info" in text
    empty = [(s.name, k) for f in text_string_to_metric_families(text) for s in f.samples
             for k, v in s.labels.items() if v == ""]
    assert empty == []
