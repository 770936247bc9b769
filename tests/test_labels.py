"""Node-label enablement with the real lightkube client against a local API server."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from fake_apiserver import FakeApiServer

from multidp.labels import overrides_from
from multidp.testing import KubeletStandIn, SamplePlugin, running_host, wait_until

WIDGET = "example.com/widget"
GADGET = "example.com/gadget"
NODE = "node-1"


@pytest.fixture
def api():
    server = FakeApiServer(NODE)
    yield server
    server.close()


def plugins() -> dict[str, SamplePlugin]:
    return {"alpha": SamplePlugin(), "beta": SamplePlugin()}


DRIVERS = {"alpha": {"resources": {WIDGET: {"count": 2}}}, "beta": {"resources": {GADGET: {"count": 3}}}}


def test_overrides_from_labels(caplog):
    labels = {"multidp.io/alpha": "TRUE", "multidp.io/beta": "off", "other": "x"}
    assert overrides_from(labels, ["alpha", "beta", "gamma"]) == {"alpha": True, "beta": None, "gamma": None}
    assert "multidp.io/beta='off' is neither true nor false" in caplog.text


def test_label_flips_start_and_stop_one_driver_while_the_other_streams(kubelet: KubeletStandIn, api, tmp_path):
    api.set_labels(multidp_io_beta="false")
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    with running_host(kubelet.directory, plugins(), drivers=DRIVERS, environ=env) as host:
        alpha = kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2)
        assert GADGET not in kubelet.resources and host.statuses["beta"].state == "disabled"
        assert "node label multidp.io/beta=false" in host.statuses["beta"].reason
        updates, registrations = alpha.updates, len(kubelet.registrations)
        for _ in range(2):
            flipped = time.monotonic()
            api.set_labels(multidp_io_beta="true")
            kubelet.wait_devices(GADGET, lambda v: v.capacity == 3 and v.stream_open, timeout=5)
            on_s = time.monotonic() - flipped
            flipped = time.monotonic()
            api.set_labels(multidp_io_beta="False")
            kubelet.wait_devices(GADGET, lambda v: v.capacity == 0 and not v.stream_open, timeout=5)
            off_s = time.monotonic() - flipped
            assert on_s < 5 and off_s < 5  # generous bounds; the figures are for the log
            logging.getLogger("test").info("label on %.3f s, off %.3f s", on_s, off_s)
        # alpha was never touched: same stream, no re-registration, no extra list.
        assert alpha.stream_open and alpha.updates == updates
        assert [r.resource for r in kubelet.registrations[registrations:]] == [GADGET, GADGET]


def test_absent_label_falls_back_to_config(kubelet, api, tmp_path):
    drivers = {**DRIVERS, "beta": {**DRIVERS["beta"], "enabled": False}}
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    with running_host(kubelet.directory, plugins(), drivers=drivers, environ=env) as host:
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2)
        assert host.statuses["beta"].reason == "disabled in config"
        api.set_labels(multidp_io_beta="true")
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)
        api.set_labels(multidp_io_beta=None)
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 0, what="back to the config default (off)")


def test_dropped_watch_is_resumed(kubelet, api, tmp_path, caplog):
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    with running_host(kubelet.directory, plugins(), drivers=DRIVERS, environ=env):
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)
        watches = sum("watch=true" in r for r in api.requests)
        api.drop_watches()
        wait_until(lambda: sum("watch=true" in r for r in api.requests) > watches, what="a new watch")
        api.set_labels(multidp_io_beta="false")
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 0, timeout=10)


def test_forbidden_keeps_config_defaults_and_says_why(kubelet, api, tmp_path, caplog):
    api.forbidden = True
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    with running_host(kubelet.directory, plugins(), drivers=DRIVERS, environ=env):
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2)
        wait_until(lambda: "HTTP 403" in caplog.text, what="the 403 in the log")
        assert "keeping the last known set" in caplog.text
        api.forbidden = False  # RBAC fixed: the next retry reads the labels
        api.set_labels(multidp_io_alpha="false")
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 0, timeout=10)


def test_unreachable_api_server_keeps_config_defaults(kubelet, tmp_path, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    server = FakeApiServer(NODE)
    config = server.kubeconfig(tmp_path)
    server.close()
    config.write_text(config.read_text().replace(server.url, f"http://127.0.0.1:{port}"))
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(config)}
    with running_host(kubelet.directory, plugins(), drivers=DRIVERS, environ=env):
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2)
        assert "cannot read or watch its labels" in caplog.text


def test_node_name_without_credentials_is_one_error_and_label_mode_off(kubelet, caplog):
    with running_host(kubelet.directory, plugins(), drivers=DRIVERS, environ={"NODE_NAME": NODE}) as host:
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)
        assert host._label_watcher is None
    errors = [r for r in caplog.records if "no Kubernetes credentials" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelname == "ERROR"
