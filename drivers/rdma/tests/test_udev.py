"""Kernel uevents through pyudev: a stand-in monitor end to end, the fallbacks, and one real uevent as root."""

from __future__ import annotations

import logging
import os
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rdma_helpers import LOGGER, health, wait_for

from multidp_rdma import uevents
from multidp_rdma.events import EventHub
from multidp_rdma.faketree import FakeRdmaNode
from multidp_rdma.uevents import SUBSYSTEMS, KernelUevents, relevant

log = logging.getLogger(LOGGER)


class FakeMonitor:
    """pyudev.Monitor as the watch uses it: fileno() to poll, poll(timeout=0) to take one device."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        self.queue: list[Any] = []
        self.filters: list[str] = []
        self.source = ""
        self.started = False
        self.lock = threading.Lock()

    def fileno(self) -> int:
        return self.read_end

    def filter_by(self, subsystem: str) -> None:
        self.filters.append(subsystem)

    def start(self) -> None:
        self.started = True

    def poll(self, timeout: float) -> Any:
        assert timeout == 0
        with self.lock:
            if not self.queue:
                return None
            os.read(self.read_end, 1)
            item = self.queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def send(self, action: str, subsystem: str, sys_name: str, device_path: str = "/devices/pci0000:3a/x") -> None:
        self.push(types.SimpleNamespace(action=action, subsystem=subsystem, sys_name=sys_name,
                                        device_path=device_path))

    def push(self, item: Any) -> None:
        with self.lock:
            self.queue.append(item)
            os.write(self.write_end, b"x")


def fake_pyudev(monkeypatch: pytest.MonkeyPatch, error: Exception | None = None) -> FakeMonitor:
    monitor = FakeMonitor()

    class Monitor:
        @staticmethod
        def from_netlink(context: object, source: str = "udev") -> FakeMonitor:
            if error is not None:
                raise error
            monitor.source = source
            return monitor

    monkeypatch.setitem(sys.modules, "pyudev", types.SimpleNamespace(Context=object, Monitor=Monitor))
    return monitor


def started(hub: EventHub) -> KernelUevents:
    watch = KernelUevents(hub, log)
    watch.start()
    wait_for(lambda: hub.live("uevents") or "uevents" in hub._why_not, "the uevent source to settle")
    return watch


def test_kernel_uevents_announce_hot_plug_and_nothing_is_listed_between(standard: FakeRdmaNode, make_driver,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = fake_pyudev(monkeypatch)
    driver = make_driver(standard)
    driver.scan()
    notified = threading.Event()
    driver._events.attach(notified.set)
    watch = started(driver._events)
    try:
        assert monitor.source == "kernel" and monitor.started and monitor.filters == list(SUBSYSTEMS)
        driver.scan()  # the catch-up scan after subscribing
        standard.add_function("0000:af:00.0")
        standard.add_rdma("mlx5_9", "0000:af:00.0")
        notified.clear()
        assert "0000:af:00.0" not in health(driver.scan())  # no event yet, and no directory listing
        monitor.send("add", "infiniband", "mlx5_9")
        assert notified.wait(5)
        assert health(driver.scan())["0000:af:00.0"] == "Healthy"
    finally:
        watch.stop()


@pytest.mark.parametrize(("subsystem", "name", "path", "meaning"), [
    ("infiniband", "mlx5_0", "/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0/mlx5_core.rdma.0/infiniband/mlx5_0",
     "discover"),
    ("infiniband_verbs", "uverbs0", "/devices/pci0000:3a/x/infiniband_verbs/uverbs0", "discover"),
    ("infiniband_mad", "umad0", "/devices/pci0000:3a/x/infiniband_mad/umad0", "discover"),
    ("misc", "rdma_cm", "/devices/virtual/misc/rdma_cm", "health"),
    ("misc", "tun", "/devices/virtual/misc/tun", ""),
    ("net", "ens5f0", "/devices/pci0000:85/0000:85:00.0/0000:86:00.0/net/ens5f0", "discover"),
    ("net", "veth1a2b", "/devices/virtual/net/veth1a2b", ""),
    ("block", "loop0", "/devices/virtual/block/loop0", ""),
])
def test_which_uevents_matter(subsystem: str, name: str, path: str, meaning: str) -> None:
    assert relevant(subsystem, name, path) == meaning


def test_lost_uevents_rescan_everything(standard: FakeRdmaNode, make_driver, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    monitor = fake_pyudev(monkeypatch)
    driver = make_driver(standard)
    driver.scan()
    watch = started(driver._events)
    try:
        driver.scan()
        with caplog.at_level(logging.INFO, logger=LOGGER):
            monitor.push(OSError(105, "No buffer space available"))
            wait_for(lambda: "uevents were lost" in caplog.text, "the overflow to be noticed")
        assert driver._events.take().rediscover
    finally:
        watch.stop()


@pytest.mark.parametrize("error", [None, OSError(93, "Protocol not supported")])
def test_without_pyudev_or_its_socket_the_driver_polls_and_says_so_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        error: Exception | None) -> None:
    if error is None:
        monkeypatch.setitem(sys.modules, "pyudev", None)  # import fails as when it is not installed
    else:
        fake_pyudev(monkeypatch, error)
    hub = EventHub(log)
    hub.source_down("links", "off here")
    hub.source_down("verbs", "off here")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        watch = started(hub)
        watch.stop()
        intervals = [hub.next_poll([], 0.25, 30, 30) for _ in range(3)]
    assert intervals == [0.25] * 3
    why = "pyudev is not installed" if error is None else "cannot subscribe to kernel uevents (OSError"
    lines = [r.getMessage() for r in caplog.records if "polled every 0.25 s" in r.getMessage()]
    assert len(lines) == 1 and why in lines[0], lines


def can_make_uevents() -> str:
    if os.geteuid() != 0:
        return "writing a uevent file needs root"
    if not os.access("/sys/class/net/lo/uevent", os.W_OK):
        return "/sys/class/net/lo/uevent is not writable here"
    try:
        import pyudev  # type: ignore[import-untyped,import-not-found,unused-ignore]

        pyudev.Context()
    except Exception as exc:  # noqa: BLE001 - no pyudev or no libudev: nothing real to test
        return f"pyudev or libudev is not available: {exc}"
    return ""


@pytest.mark.skipif(bool(can_make_uevents()), reason=can_make_uevents() or "runs")
def test_a_real_kernel_uevent_arrives_through_the_kernel_source(monkeypatch: pytest.MonkeyPatch) -> None:
    # lo is virtual (the driver ignores it); let it through so that a uevent we can cause travels the real path.
    real: Callable[[str, str, str], str] = uevents.relevant
    monkeypatch.setattr(uevents, "relevant", lambda s, n, p: "discover" if (s, n) == ("net", "lo") else real(s, n, p))
    hub = EventHub(log)
    watch = started(hub)
    try:
        assert hub.live("uevents"), hub._why_not
        hub.take()  # the catch-up rescan that subscribing asks for
        arrived = threading.Event()
        hub.attach(lambda: arrived.set() if hub.take().rediscover else None)
        Path("/sys/class/net/lo/uevent").write_text("change")
        assert arrived.wait(5), "no uevent arrived"
    finally:
        watch.stop()
