"""A metrics port in use never takes the devices down; the probes can have their own listener."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from http_helpers import get
from test_cli import env_with, site  # noqa: F401 - site is a fixture

from multidp.observe import listeners
from multidp.observe.listeners import Listener, listeners_for
from multidp.testing import KubeletStandIn, SamplePlugin, running_host, short_socket_dir, wait_until

WIDGET = "example.com/widget"


def taken_port() -> socket.socket:
    """A listening socket on a free port of 127.0.0.1: that port is in use while it is open."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listeners, "FIRST_RETRY_S", 0.05)
    monkeypatch.setattr(listeners, "MAX_RETRY_S", 0.2)


@pytest.mark.usefixtures("fast_retries")
def test_a_port_in_use_is_retried_and_taken_once_free(kubelet: KubeletStandIn, caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    busy = taken_port()
    address = f"127.0.0.1:{busy.getsockname()[1]}"
    with running_host(kubelet.directory, {"sample": SamplePlugin()}) as host:
        listener = Listener(address, host)
        listener.start()
        try:
            kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)  # the devices do not wait for the port
            wait_until(lambda: listener.failures >= 3, what="a few tries")
            assert listener.server is None
            assert f"cannot listen on {address} for metrics and probes: Address already in use; devices are " \
                   "served regardless; trying again in" in caplog.text
            busy.close()
            wait_until(lambda: listener.server is not None, timeout=5, what="the port taken once free")
            assert get(f"http://{address}/metrics")[0] == 200
            assert f"listening on {address} now, after" in caplog.text
        finally:
            listener.stop()
    busy.close()


def test_the_probes_listener_serves_only_the_probes(kubelet: KubeletStandIn) -> None:
    with running_host(kubelet.directory, {"sample": SamplePlugin()}) as host:
        kubelet.wait_registered(WIDGET)
        (probes,) = listeners_for(None, "127.0.0.1:0", host)
        try:
            assert probes.server is not None
            port = probes.server.server_address[1]
            wait_until(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, what="ready")
            assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
            code, body = get(f"http://127.0.0.1:{port}/metrics")
            assert code == 404 and "serves /healthz and /readyz" in body
        finally:
            probes.stop()
    assert listeners_for("127.0.0.1:9", "127.0.0.1:9", host)[0].probes_only is False  # same address: one listener


def test_the_daemon_serves_and_probes_answer_while_the_metrics_port_is_taken(site: Path) -> None:  # noqa: F811
    """As a DaemonSet would run it: hostNetwork, dcgm-exporter already on the metrics port."""
    busy = taken_port()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    probe_port = probe.getsockname()[1]
    probe.close()
    kubelet = KubeletStandIn(short_socket_dir("mdp-l")).start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "multidp", "run", "--drivers", "sample", "--plugin-dir", str(kubelet.directory),
         "--cdi-dir", str(kubelet.directory / "cdi"), "--metrics-address", f"127.0.0.1:{busy.getsockname()[1]}",
         "--probe-address", f"127.0.0.1:{probe_port}"],
        env=env_with(site), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4, timeout=20)
        wait_until(lambda: get(f"http://127.0.0.1:{probe_port}/readyz")[0] == 200, timeout=20, what="readyz")
        assert json.loads(get(f"http://127.0.0.1:{probe_port}/healthz")[1])["ok"] is True
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        kubelet.shutdown()
        busy.close()
    assert proc.returncode == 0, err
    assert "Address already in use; devices are served regardless" in err
