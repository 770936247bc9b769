"""The node-label watcher against an API server that misbehaves (hardening review, item 6).

A watch or a GET that never answers (a half-open connection) must be noticed by a read timeout and the
labels read again; a watch that ends at once, answers 410 or sends garbage must back off, with a bounded
number of requests and of log lines. The watcher's timeouts are shortened here so that the bounds stay
short; each test states the bound it checks, derived from those timeouts.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

import multidp.host.labels as labels_module
from multidp.testing import FakeApiServer, KubeletStandIn, SamplePlugin, running_host, wait_until

WIDGET = "example.com/widget"
GADGET = "example.com/gadget"
NODE = "node-1"
DRIVERS = {"alpha": {"resources": {WIDGET: {"count": 2}}}, "beta": {"resources": {GADGET: {"count": 3}}}}

WATCH_TIMEOUT_S = 1.0  # timeoutSeconds asked of the server (production: 60 s)
READ_SLACK_S = 1.0  # a watch silent this much longer is stalled (production: 10 s)
REQUEST_TIMEOUT_S = 2.0  # connect, and read a GET (production: 10 s)
STALL_S = WATCH_TIMEOUT_S + READ_SLACK_S
SLACK_S = 5.0  # a loaded 2-core machine: thread wake-ups, the host rebuilding a driver


@pytest.fixture
def api():
    server = FakeApiServer(NODE)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def short_timeouts(monkeypatch):
    for name, value in (("WATCH_TIMEOUT_S", WATCH_TIMEOUT_S), ("READ_SLACK_S", READ_SLACK_S),
                        ("REQUEST_TIMEOUT_S", REQUEST_TIMEOUT_S)):
        monkeypatch.setattr(labels_module, name, value, raising=False)


def plugins() -> dict[str, SamplePlugin]:
    return {"alpha": SamplePlugin(), "beta": SamplePlugin()}


def env_for(api: FakeApiServer, tmp_path) -> dict[str, str]:
    return {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}


def watches(api: FakeApiServer) -> int:
    return sum("watch=true" in r for r in api.requests)


def label_lines(caplog, text: str, level: int | None = None) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "multidp.host.labels" and text in r.getMessage()
            and (level is None or r.levelno == level)]


def test_a_silent_watch_is_noticed_and_a_flip_after_recovery_applied(kubelet: KubeletStandIn, api, tmp_path,
                                                                       caplog):
    api.stall_watches = True
    with running_host(kubelet.directory, plugins(), drivers=DRIVERS, environ=env_for(api, tmp_path)):
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)
        wait_until(lambda: api.stalled >= 1, what="a watch the server never answers")
        time.sleep(STALL_S / 2)  # the API recovers while the client sits in a silent watch
        api.stall_watches = False
        recovered = time.monotonic()
        api.set_labels(multidp_io_beta="false")
        # Bound: the silent watch is given up STALL_S after it began, then the node is read again.
        bound = STALL_S + REQUEST_TIMEOUT_S + SLACK_S
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 0, timeout=bound,
                             what=f"the label flip, within {bound} s of the API recovering")
        logging.getLogger("test").info("flip applied %.2f s after recovery", time.monotonic() - recovered)
        stalls = label_lines(caplog, "stalled", logging.WARNING)
        assert 1 <= len(stalls) <= api.stalled, [r.getMessage() for r in stalls]  # one line per stall


def test_a_silent_get_is_noticed_and_a_flip_after_recovery_applied(kubelet, api, tmp_path, caplog):
    api.stall_gets = True
    with running_host(kubelet.directory, plugins(), drivers=DRIVERS, environ=env_for(api, tmp_path)):
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)  # the config defaults meanwhile
        wait_until(lambda: api.stalled >= 1, what="a GET the server never answers")
        api.stall_gets = False
        started = time.monotonic()
        api.set_labels(multidp_io_beta="false")
        # Bound: the silent GET times out, then one backoff step (the time since the watcher started, here
        # at most one request timeout and a little) before it is read again.
        bound = 2 * REQUEST_TIMEOUT_S + labels_module.BACKOFF_FIRST_S + SLACK_S
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 0, timeout=bound,
                             what=f"the label flip, within {bound} s of the API recovering")
        logging.getLogger("test").info("flip applied %.2f s after recovery", time.monotonic() - started)
        assert label_lines(caplog, "timed out") or label_lines(caplog, "Timeout")


WINDOW_S = 6.0


@pytest.mark.parametrize("answer", ["end", "gone", "expired", "garbage"])
def test_watches_that_fail_at_once_back_off(kubelet, api, tmp_path, caplog, answer):
    api.watch_answer = answer
    with running_host(kubelet.directory, plugins(), drivers=DRIVERS, environ=env_for(api, tmp_path)):
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)
        wait_until(lambda: watches(api) >= 1, what="a first watch")
        first, began = len(api.requests), time.monotonic()
        time.sleep(WINDOW_S)
        made = len(api.requests) - first
        # Backoff by the time since the last good event: attempts at about 0.5, 1, 2, 4 s ... after the
        # start, each a GET and a watch, so a few attempts in the window (before: 23 requests a second).
        attempts = 2 + int(WINDOW_S / labels_module.BACKOFF_FIRST_S).bit_length()
        logging.getLogger("test").info("%s: %d requests in %.1f s", answer, made, time.monotonic() - began)
        assert made <= 2 * attempts, f"{made} requests in {WINDOW_S} s, the last: {api.requests[-4:]}"
        # Log lines: at most one per backoff step, and no INFO line per request.
        failures = label_lines(caplog, "cannot read or watch its labels", logging.WARNING)
        assert 1 <= len(failures) <= attempts, [r.getMessage() for r in failures]
        assert len(label_lines(caplog, "following the labels", logging.INFO)) <= 1
        # The API recovers: the next attempt (at most one backoff step away) follows the labels again.
        api.watch_answer = None
        api.set_labels(multidp_io_beta="false")
        bound = labels_module.BACKOFF_MAX_S + SLACK_S
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 0, timeout=bound, what="the flip after recovery")
    # Stopped, the watcher ends within one read timeout, whatever it was doing.
    wait_until(lambda: not any(t.name == "node-labels" for t in threading.enumerate()), timeout=STALL_S + SLACK_S,
               what="the node-labels thread to end")


def test_healthy_watches_end_and_resume_quietly(kubelet, api, tmp_path, caplog):
    """The server ends each watch after timeoutSeconds (with a bookmark): a new watch at once, no log line."""
    with running_host(kubelet.directory, plugins(), drivers=DRIVERS, environ=env_for(api, tmp_path)):
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)
        wait_until(lambda: watches(api) >= 3, timeout=3 * WATCH_TIMEOUT_S + SLACK_S, what="watches renewed")
        assert all("timeoutSeconds=" in r and "allowWatchBookmarks=true" in r for r in api.requests
                   if "watch=true" in r)
        api.set_labels(multidp_io_beta="false")
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 0, timeout=WATCH_TIMEOUT_S + SLACK_S)
        gets = sum("watch=true" not in r for r in api.requests)
        assert gets == 1, api.requests  # watches resume from the last version; no re-list
    assert [r.getMessage() for r in caplog.records if r.name == "multidp.host.labels"
            and r.levelno >= logging.WARNING] == []
