"""Refused requests are logged with their reason, a few per minute at most (issue: operators could not
see why pods failed); the driver's own faults stay logged once per distinct message."""

from __future__ import annotations

import logging

import grpc
import pytest

from multidp.serving import lograte
from multidp.serving.lograte import LogOnce, RateLimitedLog
from multidp.testing import KubeletStandIn, SamplePlugin, allocate_request, running_host

WIDGET = "example.com/widget"


def test_a_refused_allocate_is_logged_with_its_reason(kubelet: KubeletStandIn, caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    with running_host(kubelet.directory, {"sample": SamplePlugin()}):
        kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)
        with pytest.raises(grpc.RpcError) as caught:
            kubelet.stub(WIDGET).Allocate(allocate_request(["widget-9"]), timeout=5)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    lines = [r for r in caplog.records if r.name == "multidp.serving.service"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert lines[0].getMessage().startswith(f"resource {WIDGET}: allocation refused (INVALID_ARGUMENT): ")
    assert "widget-9" in lines[0].getMessage()


def test_rate_limited_lines_are_counted_when_the_next_window_opens(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    monkeypatch.setattr(lograte.time, "monotonic", lambda: now[0])
    limited = RateLimitedLog(logging.getLogger("test.rate"), per_window=3, window_s=60)
    caplog.set_level(logging.INFO, logger="test.rate")
    for n in range(7):
        limited(logging.WARNING, f"refused {n}")
    now[0] += 61
    limited(logging.WARNING, "refused later")
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0", "refused 1", "refused 2", "4 more like it were not logged in the last 60 s", "refused later"]


def test_log_once_says_each_message_once_until_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    once = LogOnce(logging.getLogger("test.once"))
    caplog.set_level(logging.INFO, logger="test.once")
    for message in ("a", "b", "a", "b"):
        once(logging.ERROR, message)
    once.forget()
    once(logging.ERROR, "a")
    assert [r.getMessage() for r in caplog.records] == ["a", "b", "a"]
