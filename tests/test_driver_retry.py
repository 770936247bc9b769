"""A driver whose creation fails is tried again with growing delays, and readiness shows it (issue 13, item 6).

Over real sockets: the stand-in kubelet sees the resource register once creation works; /readyz is 503 while
an enabled driver is failed (retrying or not) and 200 after; /healthz stays 200 throughout; the metrics say
"retrying" and count the tries. No try runs after stop, and a reload or label change in a backoff takes over.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from http_helpers import get, metric

from multidp import DriverContext, hookimpl
from multidp.host.retry import FailedStatus, Retries
from multidp.observe.metrics import ObservabilityServer
from multidp.observe.probes import readiness
from multidp.testing import Host, KubeletStandIn, PluginRegistry, SamplePlugin, wait_until
from multidp.testing.host import make_settings

WIDGET = "example.com/widget"
GADGET = "example.com/gadget"
FAST = (0.05, 0.2)  # the retry delays of most tests here: first, longest


class FlakyCreate(SamplePlugin):
    """Creation raises while ``broken`` is set; ``gate``, when set, holds each creation until it opens."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = threading.Event()
        self.broken.set()
        self.gate: threading.Event | None = None
        self.tries = 0
        self.held = threading.Event()  # a creation waits at the gate

    @hookimpl  # pluggy reads the marker from the method that runs
    def multidp_create_driver(self, context: DriverContext) -> Any:
        self.tries += 1
        if self.gate is not None:
            self.held.set()
            self.gate.wait(10)
        if self.broken.is_set():
            raise RuntimeError("no hardware yet")
        return super().multidp_create_driver(context)


@contextmanager
def host_with(directory: Path, plugins: dict[str, Any], drivers: dict[str, Any] | None = None,
              delays: tuple[float, float] = FAST, **overrides: Any) -> Iterator[Host]:
    """running_host with settable retry delays (the observability server too: ``host.base``)."""
    settings = make_settings(directory, drivers, **overrides)
    settings.drivers = sorted(plugins)
    host = Host(settings, PluginRegistry(extra=plugins), environ={}, retry_delays=delays)
    host.start()
    server = ObservabilityServer("127.0.0.1:0", host)
    server.start()
    host.base = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield host
    finally:
        server.stop()
        if not host.stopping:
            host.stop()


def probe(host: Host, path: str) -> tuple[int, dict[str, Any]]:
    code, body = get(host.base + path)  # type: ignore[attr-defined]
    return code, json.loads(body)


def gadgets(count: int = 2) -> dict[str, Any]:
    return {"resources": {GADGET: {"count": count}}}


def test_a_driver_whose_creation_fails_is_retried_and_serves_once_it_works(kubelet: KubeletStandIn,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="multidp.host.host")
    flaky = FlakyCreate()
    with host_with(kubelet.directory, {"good": SamplePlugin(), "flaky": flaky}, {"flaky": gadgets()}) as host:
        kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)
        wait_until(lambda: flaky.tries >= 4, what="a few tries")
        status = host.statuses["flaky"]
        assert isinstance(status, FailedStatus) and status.state == "failed" and status.retrying
        assert status.reason == "RuntimeError: no hardware yet" and status.attempts >= 1
        code, report = probe(host, "/readyz")
        assert code == 503 and report["failed_drivers"] == {"flaky": "RuntimeError: no hardware yet"}
        assert report["retrying"]["flaky"]["attempts"] >= 1
        assert 0 <= report["retrying"]["flaky"]["next_try_in_s"] <= FAST[1]
        assert probe(host, "/healthz")[0] == 200  # liveness: a failed driver is no reason to kill the pod
        text = get(host.base + "/metrics")[1]  # type: ignore[attr-defined]
        assert metric(text, "multidp_driver_up", driver="flaky", state="retrying") == 1
        assert metric(text, "multidp_driver_start_failures_total", driver="flaky") >= 3  # the 4th may run now
        assert GADGET not in kubelet.resources

        flaky.broken.clear()
        kubelet.wait_devices(GADGET, lambda v: v.allocatable == 2, what="the gadgets once creation works")
        wait_until(lambda: probe(host, "/readyz")[0] == 200, what="ready")
        assert probe(host, "/readyz")[1]["failed_drivers"] == {} and host.statuses["flaky"].state == "running"
        text = get(host.base + "/metrics")[1]  # type: ignore[attr-defined]
        assert metric(text, "multidp_driver_up", driver="flaky", state="running") == 1
        tries = flaky.tries
        assert metric(text, "multidp_driver_start_attempts_total", driver="flaky") == tries
        assert metric(text, "multidp_driver_start_failures_total", driver="flaky") == tries - 1
        time.sleep(3 * FAST[1])
        assert flaky.tries == tries  # no try after success
    failures = [r for r in caplog.records if "no hardware yet" in r.getMessage()]
    assert [r.levelname for r in failures] == ["ERROR"] + ["DEBUG"] * (tries - 2)  # each reason once
    assert "driver flaky (registered in-process) failed: RuntimeError: no hardware yet; retrying in" \
        in failures[0].getMessage()
    assert f"driver flaky (registered in-process) running after {tries} attempts" in caplog.text


def test_delays_double_from_the_first_to_the_cap_with_a_little_jitter() -> None:
    retries = Retries(lambda name, token: None, 1.0, 300.0)
    try:
        delays = [retries.failed("x", "same", retry=True).delay for _ in range(12)]
        bases = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
        assert all(d is not None and 0.9 * b <= d <= b for d, b in zip(delays, bases, strict=True)), delays
        assert retries.succeeded("x") == 13
        assert retries.failed("x", "other", retry=True).delay <= 1.0  # type: ignore[operator]
        retries.begin("x", fresh=False)  # a retry keeps the delays growing
        assert 1.8 <= retries.failed("x", "other", retry=True).delay <= 2.0  # type: ignore[operator]
        retries.begin("x", fresh=True)  # a reload or label change starts them over
        assert retries.failed("x", "other", retry=True).delay <= 1.0  # type: ignore[operator]
        assert retries.failed("y", "bad config: ...", retry=False).delay is None
    finally:
        retries.close()
    with pytest.raises(ValueError, match="0 < first <= max"):
        Retries(lambda name, token: None, 5.0, 1.0)


@pytest.mark.parametrize("broken", ["config", "load"])
def test_failures_that_cannot_fix_themselves_are_not_retried_but_keep_the_pod_unready(
        kubelet: KubeletStandIn, broken: str, caplog: pytest.LogCaptureFixture) -> None:
    flaky = FlakyCreate()
    flaky.broken.clear()
    if broken == "load":
        flaky.MULTIDP_DRIVER_API = "9.0"  # type: ignore[attr-defined]  # a newer API: refused at load
    drivers = {"flaky": {"pollInterval": "often"} if broken == "config" else gadgets()}
    with host_with(kubelet.directory, {"good": SamplePlugin(), "flaky": flaky}, drivers) as host:
        kubelet.wait_registered(WIDGET)
        wait_until(lambda: probe(host, "/readyz")[1]["waiting_for"] == [], what="the good driver ready")
        time.sleep(4 * FAST[1])  # several retry delays
        status = host.statuses["flaky"]
        assert isinstance(status, FailedStatus) and not status.retrying and flaky.tries == 0
        assert host.retries.attempts["flaky"] == 1
        code, report = probe(host, "/readyz")
        assert code == 503 and "flaky" in report["failed_drivers"] and report["retrying"] == {}
        text = get(host.base + "/metrics")[1]  # type: ignore[attr-defined]
        assert metric(text, "multidp_driver_up", driver="flaky", state="failed") == 1
    expected = ("not retried until the config or the node's labels change" if broken == "config"
                else "not retried: a plugin that cannot be loaded needs a new image")
    assert expected in caplog.text


def test_disabled_and_unselected_drivers_never_block_readiness(kubelet: KubeletStandIn) -> None:
    flaky = FlakyCreate()
    plugins = {"good": SamplePlugin(), "off": flaky}
    with host_with(kubelet.directory, plugins, {"off": {"enabled": False}}) as host:
        wait_until(lambda: probe(host, "/readyz")[0] == 200, what="ready")
        assert host.statuses["off"].state == "disabled" and flaky.tries == 0
    settings = make_settings(kubelet.directory)
    settings.drivers = ["good"]
    host = Host(settings, PluginRegistry(extra={"good": SamplePlugin(), "other": FlakyCreate()}), environ={})
    host.start()
    try:
        wait_until(lambda: readiness(host)[0], what="ready beside a driver not selected")
        assert host.statuses["other"].state == "not selected"
    finally:
        host.stop()


def test_no_try_runs_after_stop_and_a_creation_finishing_after_stop_is_closed(kubelet: KubeletStandIn) -> None:
    flaky = FlakyCreate()
    with host_with(kubelet.directory, {"flaky": flaky}, {"flaky": gadgets()}) as host:
        wait_until(lambda: flaky.tries >= 2, what="a retry")
        flaky.gate = threading.Event()
        assert flaky.held.wait(5)  # a retry is creating the driver now, held at the gate
        flaky.broken.clear()
        host.stop()  # while it does
        flaky.gate.set()
        wait_until(lambda: bool(flaky.drivers) and flaky.drivers[-1].closed, what="the late driver closed")
        tries = flaky.tries
        time.sleep(4 * FAST[1])
        assert flaky.tries == tries and host.runners == {} and host.endpoints == {}
    assert GADGET not in kubelet.resources


def test_no_try_runs_after_stop_while_waiting(kubelet: KubeletStandIn) -> None:
    flaky = FlakyCreate()
    with host_with(kubelet.directory, {"flaky": flaky}, {"flaky": gadgets()}) as host:
        wait_until(lambda: flaky.tries >= 2, what="a retry")
    tries = flaky.tries
    time.sleep(4 * FAST[1])
    assert flaky.tries == tries and host.runners == {}


def test_a_reload_in_a_backoff_brings_the_driver_up_and_cancels_the_pending_try(kubelet: KubeletStandIn) -> None:
    flaky = FlakyCreate()
    drivers = {"flaky": gadgets()}
    with host_with(kubelet.directory, {"flaky": flaky}, drivers, delays=(1.0, 1.0)) as host:
        wait_until(lambda: flaky.tries == 1 and isinstance(host.statuses.get("flaky"), FailedStatus),
                   what="the first failure")
        flaky.broken.clear()
        new = make_settings(kubelet.directory, {"flaky": gadgets(3)})
        new.drivers = ["flaky"]
        host.reload(new)  # well within the 0.9-1 s delay
        kubelet.wait_devices(GADGET, lambda v: v.allocatable == 3, what="the reloaded config served")
        assert flaky.tries == 2 and host.statuses["flaky"].state == "running"
        time.sleep(1.2)  # past the cancelled try
        assert flaky.tries == 2 and len(flaky.drivers) == 1 and not flaky.drivers[0].closed
        assert host.retries.attempts["flaky"] == 2 and host.retries.failures["flaky"] == 1


def test_a_label_that_disables_a_retrying_driver_stops_its_tries_and_readiness_follows(
        kubelet: KubeletStandIn) -> None:
    flaky = FlakyCreate()
    with host_with(kubelet.directory, {"good": SamplePlugin(), "flaky": flaky}, {"flaky": gadgets()}) as host:
        kubelet.wait_registered(WIDGET)
        wait_until(lambda: flaky.tries >= 2, what="a retry")
        host.apply_labels({"multidp.io/flaky": "false"})
        assert host.statuses["flaky"].state == "disabled"
        tries = flaky.tries
        wait_until(lambda: probe(host, "/readyz")[0] == 200, what="ready without the disabled driver")
        time.sleep(4 * FAST[1])
        assert flaky.tries == tries
        host.apply_labels({"multidp.io/flaky": "true"})  # on again: tried at once, and on retrying
        wait_until(lambda: flaky.tries > tries + 1, what="tried again")
        flaky.broken.clear()
        kubelet.wait_devices(GADGET, lambda v: v.allocatable == 2)
        assert host.statuses["flaky"].state == "running"


def test_an_unrelated_label_change_does_not_reset_the_delays(kubelet: KubeletStandIn) -> None:
    flaky = FlakyCreate()
    with host_with(kubelet.directory, {"flaky": flaky}, {"flaky": gadgets()}, delays=(5.0, 5.0)) as host:
        wait_until(lambda: flaky.tries == 1 and isinstance(host.statuses.get("flaky"), FailedStatus),
                   what="the first failure")
        host.apply_labels({"example.com/gfd.timestamp": "1"})
        host.apply_labels({"example.com/gfd.timestamp": "2"})
        assert flaky.tries == 1  # left to its timer, which reads the labels of then


def test_a_reload_that_fails_to_create_keeps_the_old_driver_and_retries_the_new_config(
        kubelet: KubeletStandIn, caplog: pytest.LogCaptureFixture) -> None:
    flaky = FlakyCreate()
    flaky.broken.clear()
    with host_with(kubelet.directory, {"flaky": flaky}, {"flaky": gadgets()}) as host:
        kubelet.wait_devices(GADGET, lambda v: v.allocatable == 2)
        flaky.broken.set()
        new = make_settings(kubelet.directory, {"flaky": {**gadgets(), "pollInterval": 0.5}})
        new.drivers = ["flaky"]
        host.reload(new)
        assert "keeping it running as it was, retrying in" in caplog.text
        assert host.statuses["flaky"].state == "running" and probe(host, "/readyz")[0] == 200
        tries = flaky.tries
        wait_until(lambda: flaky.tries > tries, what="the new config tried again")
        flaky.broken.clear()
        # The new runner is in place a moment before the old one is stopped: wait for both.
        wait_until(lambda: host.runners["flaky"].driver.poll_interval == 0.5 and flaky.drivers[0].closed,
                   what="the new config running, the old driver closed")
        assert len(flaky.drivers) == 2 and flaky.drivers[0].closed and not flaky.drivers[1].closed
        kubelet.wait_devices(GADGET, lambda v: v.allocatable == 2)
        assert kubelet.registration_count(GADGET) == 1  # the endpoint stayed; the new driver took it over


def test_a_config_error_is_not_created_again_on_unrelated_label_changes(
        kubelet: KubeletStandIn, caplog: pytest.LogCaptureFixture) -> None:
    flaky = FlakyCreate()
    with host_with(kubelet.directory, {"flaky": flaky}, {"flaky": {"pollInterval": "often"}}) as host:
        wait_until(lambda: isinstance(host.statuses.get("flaky"), FailedStatus), what="the config error")
        for n in range(5):
            host.apply_labels({"example.com/gfd.timestamp": str(n)})
        assert host.retries.attempts["flaky"] == 1
        assert caplog.text.count("not retried until the config or the node's labels change") == 1


def test_a_label_selecting_a_config_that_works_brings_a_retrying_driver_up_at_once(kubelet: KubeletStandIn) -> None:
    class NeedsMode(SamplePlugin):
        """Creation fails unless the per-node config sets preStart (standing for a working setting)."""

        @hookimpl
        def multidp_create_driver(self, context: DriverContext) -> Any:
            if not context.config.pre_start:
                raise RuntimeError("device not found in this mode")
            return super().multidp_create_driver(context)

    plugin = NeedsMode()
    section = {**gadgets(), "configByLabel": {"label": "example.com/mode", "configs": {"good": {"preStart": True}}}}
    with host_with(kubelet.directory, {"flaky": plugin}, {"flaky": section}, delays=(30.0, 30.0)) as host:
        wait_until(lambda: isinstance(host.statuses.get("flaky"), FailedStatus), what="the first failure")
        host.apply_labels({"example.com/mode": "good"})  # the next timed try would be 27-30 s away
        kubelet.wait_devices(GADGET, lambda v: v.allocatable == 2, timeout=5, what="served with the good config")
        assert host.statuses["flaky"].state == "running"


def test_a_creation_that_hangs_is_not_started_again_beside_itself_and_its_late_driver_is_closed(
        kubelet: KubeletStandIn) -> None:
    flaky = FlakyCreate()
    flaky.broken.clear()
    flaky.gate = threading.Event()  # every creation hangs until the gate opens
    timeouts = {"create": 0.2}
    with host_with(kubelet.directory, {"flaky": flaky}, {"flaky": gadgets()}, timeouts=timeouts) as host:
        wait_until(lambda: host.retries.failures["flaky"] >= 4, what="several tries while the first hangs")
        assert flaky.tries == 1  # the later tries found it still running and did not start another
        assert "its previous creation has not returned yet" in host.statuses["flaky"].reason
        flaky.gate.set()  # the hung creation returns, long after its deadline
        wait_until(lambda: bool(flaky.drivers) and flaky.drivers[0].closed, what="the late driver closed")
        kubelet.wait_devices(GADGET, lambda v: v.allocatable == 2, what="a later try serves")
        assert flaky.tries == 2 and not flaky.drivers[1].closed


def test_a_reload_takes_new_retry_delays_and_says_which_settings_need_a_restart(
        kubelet: KubeletStandIn, caplog: pytest.LogCaptureFixture) -> None:
    with host_with(kubelet.directory, {"good": SamplePlugin()}) as host:
        kubelet.wait_registered(WIDGET)
        new = make_settings(kubelet.directory / "elsewhere", driver_retry={"first": 2, "max": 60})
        new.drivers = ["good"]
        host.reload(new)
        assert (host.retries.first_s, host.retries.max_s) == (2, 60)
        assert host.settings.plugin_dir == kubelet.directory
        assert "reload: plugin_dir changed but takes a restart; kept as it was" in caplog.text
