"""Verbs asynchronous events: the real child process over a stand-in pyverbs, its restarts, its end."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from rdma_helpers import LOGGER, health, wait_for

from multidp_rdma import verbsevents
from multidp_rdma.events import EventHub
from multidp_rdma.faketree import FakeRdmaNode
from multidp_rdma.verbschild import EVENT_FILE, Watcher, new_event_file
from multidp_rdma.verbsevents import VerbsEvents

log = logging.getLogger(LOGGER)

# pyverbs.device as the child uses it. Each device is a FIFO in FAKE_VERBS_DIR standing for its asynchronous
# event file: "09\n" is IBV_EVENT_PORT_ACTIVE, "10\n" PORT_ERR, "XX\n" a device that went away.
FAKE_DEVICE = textwrap.dedent('''
    import os

    class AsyncEvent:
        def __init__(self, kind):
            self.event_type = kind

        def ack(self):
            pass

    class Context:
        def __init__(self, name):
            path = os.path.join(os.environ["FAKE_VERBS_DIR"], name)
            if not os.path.exists(path):
                raise RuntimeError(f"Failed to find device {name}")
            self.async_fd = os.open(path, os.O_RDWR)

        def get_async_event(self):
            record = os.read(self.async_fd, 3).decode().strip()
            if not record.isdigit():
                raise RuntimeError("Failed to get async event")
            return AsyncEvent(int(record))

        def close(self):
            os.close(self.async_fd)
''')


@pytest.fixture
def fake_verbs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in pyverbs the child imports (through PYTHONPATH), and the folder of its devices' FIFOs."""
    package = tmp_path / "site" / "pyverbs"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "device.py").write_text(FAKE_DEVICE)
    devices = tmp_path / "verbs"
    devices.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), *sys.path]))
    monkeypatch.setenv("FAKE_VERBS_DIR", str(devices))
    return devices


def add_device(devices: Path, name: str) -> Path:
    os.mkfifo(devices / name)
    return devices / name


def announce(fifo: Path, record: str) -> None:
    fd = os.open(fifo, os.O_RDWR)  # never blocks, whether or not the child has it open
    try:
        os.write(fd, record.encode())
    finally:
        os.close(fd)


def test_port_events_from_the_child_reach_the_driver_and_watched_ports_are_not_polled(
        standard: FakeRdmaNode, make_driver, fake_verbs: Path, caplog: pytest.LogCaptureFixture) -> None:
    fifo = add_device(fake_verbs, "mlx5_0")
    add_device(fake_verbs, "mlx4_0")
    driver = make_driver(standard)
    driver.scan()
    hub = driver._events
    notified = threading.Event()
    hub.attach(notified.set)
    events = VerbsEvents(hub, log)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        events.watch([d.name for d in driver._discovery.devices])
        events.start()
        try:
            wait_for(lambda: hub._verbs == {"mlx5_0", "mlx4_0"}, "the child to watch mlx5_0 and mlx4_0")
            driver.scan()
            standard.port_down("mlx5_0")  # no event yet: a watched device is not read again
            assert health(driver.scan())["0000:3b:00.0"] == "Healthy"
            notified.clear()
            announce(fifo, "10\n")  # IBV_EVENT_PORT_ERR
            assert notified.wait(10)
            wait_for(lambda: health(driver.scan())["0000:3b:00.0"] == "Unhealthy", "PORT_ERR to be seen")
            standard.port_up("mlx5_0")
            announce(fifo, "09\n")  # IBV_EVENT_PORT_ACTIVE
            wait_for(lambda: health(driver.scan())["0000:3b:00.0"] == "Healthy", "PORT_ACTIVE to be seen")
            # mlx5_1 has no verbs context here: said once, and its ports are polled.
            standard.port_down("mlx5_1")
            assert health(driver.scan())["0000:86:00.0"] == "Unhealthy"
        finally:
            events.stop()
    lines = [r.getMessage() for r in caplog.records if "no verbs events for RDMA device mlx5_1" in r.getMessage()]
    assert len(lines) == 1 and "Failed to find device mlx5_1" in lines[0]


def test_a_device_that_goes_away_is_reported_lost_and_polled(fake_verbs: Path) -> None:
    fifo = add_device(fake_verbs, "mlx5_0")
    hub = EventHub(log)
    events = VerbsEvents(hub, log)
    events.watch(["mlx5_0"])
    events.start()
    try:
        wait_for(lambda: hub._verbs == {"mlx5_0"}, "the child to watch mlx5_0")
        announce(fifo, "XX\n")
        wait_for(lambda: hub._verbs == frozenset(), "mlx5_0 to be given up")
        assert "mlx5_0" in hub.take().devices
    finally:
        events.stop()


def test_a_dying_child_is_restarted_with_back_off_and_logged_once(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(verbsevents, "FIRST_BACKOFF_S", 0.02)
    hub = EventHub(log)
    events = VerbsEvents(hub, log, command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        events.start()
        wait_for(lambda: events.restarts >= 3, "three restarts")
        events.stop()
    warnings = [r.getMessage() for r in caplog.records if "verbs event child exited" in r.getMessage()]
    assert len(warnings) == 1 and "exit code 3" in warnings[0]
    assert not hub.live("verbs") and "exit code 3" in hub._why_not["verbs"]


PARENT = textwrap.dedent("""
    import logging, sys, threading
    from multidp_rdma.events import EventHub
    from multidp_rdma.verbsevents import VerbsEvents
    hub = EventHub(logging.getLogger("t"))
    events = VerbsEvents(hub, hub.log)
    events.watch(["mlx5_0"])
    events.start()
    while not hub._verbs:
        threading.Event().wait(0.01)
    print(events._child.pid, flush=True)
    threading.Event().wait(60)
""")


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_the_child_ends_with_the_driver_process(fake_verbs: Path) -> None:
    add_device(fake_verbs, "mlx5_0")
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not gone(child)
        parent.send_signal(signal.SIGKILL)  # no clean-up at all: only the pipe closing tells the child
        parent.wait()
        wait_for(lambda: gone(child), "the child to end")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_the_event_file_is_found_among_new_descriptors() -> None:
    before = {0: "/dev/null", 5: "/dev/infiniband/uverbs0", 6: EVENT_FILE}
    assert new_event_file(before, {**before, 7: "/dev/infiniband/uverbs1", 8: EVENT_FILE}) == 8
    assert new_event_file(before, {**before, 7: "/dev/infiniband/uverbs1"}) is None  # none: not watched
    assert new_event_file(before, {**before, 8: EVENT_FILE, 9: EVENT_FILE}) is None  # ambiguous: not guessed


def test_a_context_without_an_event_file_is_not_watched() -> None:
    class Context:
        closed = False

        def close(self) -> None:
            Context.closed = True

    out = io.StringIO()
    links: list[dict[int, str]] = [{0: "/dev/null"}, {0: "/dev/null", 5: "/dev/infiniband/uverbs0"}]
    watcher = Watcher(lambda name: Context(), out, links=lambda: links.pop(0))
    watcher.watch(["mlx5_0"])
    assert out.getvalue().splitlines() == ["failed mlx5_0 its asynchronous event file was not found", "watching"]
    assert Context.closed and not watcher.contexts


def test_verbs_events_cost_no_cpu_while_nothing_happens(fake_verbs: Path) -> None:
    add_device(fake_verbs, "mlx5_0")
    hub = EventHub(log)
    events = VerbsEvents(hub, log)
    events.watch(["mlx5_0"])
    events.start()
    try:
        wait_for(lambda: hub._verbs == {"mlx5_0"}, "the child to watch mlx5_0")
        assert events._child is not None
        pid = events._child.pid

        def ticks() -> int:
            fields: Any = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])

        def state() -> str:
            return str(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0])

        before = ticks()
        time.sleep(1.0)
        assert state() == "S"  # asleep in poll(), not spinning
        assert ticks() - before <= 1  # at most one clock tick of rounding in a second of idling
    finally:
        events.stop()
