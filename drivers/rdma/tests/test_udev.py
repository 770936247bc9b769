"""The optional pyudev watch, against a stand-in pyudev module (no udev netlink socket here)."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest

from multidp_rdma.bindings import UDEV_SUBSYSTEMS, UdevWatch


class FakeObserver:
    def __init__(self, monitor: Any, callback: Callable[[Any], None], name: str) -> None:
        self.monitor, self.callback, self.name = monitor, callback, name
        self.daemon = False
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def send_stop(self) -> None:
        self.stopped = True


def fake_pyudev(monkeypatch: pytest.MonkeyPatch, netlink_error: Exception | None = None) -> list[FakeObserver]:
    observers: list[FakeObserver] = []
    filters: list[str] = []

    class Monitor:
        @staticmethod
        def from_netlink(context: object) -> Monitor:
            if netlink_error is not None:
                raise netlink_error
            return Monitor()

        def filter_by(self, subsystem: str) -> None:
            filters.append(subsystem)

    def observer(monitor: Any, callback: Callable[[Any], None], name: str) -> FakeObserver:
        observers.append(FakeObserver(monitor, callback, name))
        return observers[-1]

    module = types.SimpleNamespace(Context=object, Monitor=Monitor, MonitorObserver=observer, filters=filters)
    monkeypatch.setitem(sys.modules, "pyudev", module)
    return observers


def test_uevents_of_rdma_subsystems_trigger_a_rescan(monkeypatch: pytest.MonkeyPatch) -> None:
    observers = fake_pyudev(monkeypatch)
    events: list[str] = []
    watch = UdevWatch.start(lambda: events.append("rescan"), logging.getLogger("test"))
    assert watch is not None
    (observer,) = observers
    assert observer.started and observer.daemon and observer.name == "rdma-udev"
    assert sys.modules["pyudev"].filters == list(UDEV_SUBSYSTEMS)  # type: ignore[attr-defined]
    observer.callback(object())  # a device added or removed
    observer.callback(object())
    assert events == ["rescan", "rescan"]
    watch.stop()
    assert observer.stopped


def test_no_netlink_socket_means_rescans_only(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    fake_pyudev(monkeypatch, netlink_error=OSError(93, "Protocol not supported"))
    assert UdevWatch.start(lambda: None, logging.getLogger("test")) is None
    assert "udev events unavailable (OSError" in caplog.text and "hot-plug is seen by rescans" in caplog.text


def test_without_pyudev_nothing_is_watched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyudev", None)  # import fails
    assert UdevWatch.start(lambda: None, logging.getLogger("test")) is None
