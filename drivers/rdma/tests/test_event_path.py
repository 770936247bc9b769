"""Which path health takes: events where the sources run, polling where they cannot, said once in the log."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import pytest
from multidp.testing import create_driver
from rdma_helpers import LOGGER, health, wait_for

import multidp_rdma.plugin
from multidp_rdma.driver import RdmaDriver
from multidp_rdma.faketree import FAULTY_DEVICE, RdmaSimulation

FAULTY_ID = "0000:3b:00.0"


def simulated(tmp_path: Path, **config: object) -> tuple[RdmaDriver, RdmaSimulation, threading.Event]:
    driver = create_driver(multidp_rdma.plugin, config, name="rdma", simulate_in=tmp_path)
    assert isinstance(driver, RdmaDriver) and isinstance(driver._simulation, RdmaSimulation)
    notified = threading.Event()
    driver.start(notified.set)
    return driver, driver._simulation, notified


def path_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("RDMA h")]


def test_a_simulated_node_runs_the_event_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        driver, simulation, notified = simulated(tmp_path)
        try:
            driver.scan()
            assert driver.poll_interval > 25  # only the safety-net rescan is left
            notified.clear()
            simulation.inject_fault()
            assert notified.wait(5)
            assert health(driver.scan())[FAULTY_ID] == "Unhealthy"
            simulation.clear_fault()
            assert health(driver.scan())[FAULTY_ID] == "Healthy"
            simulation.node.port_down(FAULTY_DEVICE)  # unannounced: nothing polls it
            assert health(driver.scan())[FAULTY_ID] == "Healthy"
        finally:
            driver.close()
    assert path_lines(caplog) == ["RDMA health is event-driven (kernel uevents, verbs events); "
                                  "a safety-net rescan runs every 30 s"]


def test_without_events_a_simulated_node_polls_as_before(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        driver, simulation, _ = simulated(tmp_path, udev="off", verbs="off")
        try:
            scans = [driver.scan() for _ in range(3)]
            assert driver.poll_interval == 0.25
            simulation.inject_fault()  # announced to nobody: the next poll sees the file
            assert health(driver.scan())[FAULTY_ID] == "Unhealthy"
            simulation.node.remove_rdma("mlx5_3")  # hot-unplug, seen by listing the class directories
            assert "0000:86:00.3" not in health(driver.scan()) and "0000:86:00.3" in health(scans[0])
        finally:
            driver.close()
    lines = path_lines(caplog)
    assert len(lines) == 1 and lines[0].startswith("RDMA health and hot-plug are polled every 0.25 s"), lines
    assert "udev is off in the config" in lines[0] and "verbs is off in the config" in lines[0]


def test_uevents_without_port_events_poll_ports_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        driver, simulation, _ = simulated(tmp_path, verbs="off")
        try:
            driver.scan()
            assert driver.poll_interval == 0.25
            simulation.inject_fault()
            assert health(driver.scan())[FAULTY_ID] == "Unhealthy"
            simulation.node.remove_rdma("mlx5_3")  # unannounced hot-unplug: no directory is listed
            assert "0000:86:00.3" in health(driver.scan())
            simulation.kernel.devices_changed()
            assert "0000:86:00.3" not in health(driver.scan())
        finally:
            driver.close()
    lines = path_lines(caplog)
    assert len(lines) == 1 and lines[0].startswith("RDMA hot-plug arrives as kernel uevents; the port state of "), lines


def host_driver(tmp_path: Path) -> RdmaDriver:
    """A driver on this machine's own /sys (no RDMA devices here), so the real sources are tried."""
    driver = create_driver(multidp_rdma.plugin, {}, name="rdma", sysfs_root="/sys", dev_root=tmp_path)
    assert isinstance(driver, RdmaDriver) and driver.root.is_host
    return driver


def test_with_no_event_library_the_host_polls_and_says_so_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    for module in ("pyudev", "pyverbs"):  # link events need no library: the standard library's netlink socket
        monkeypatch.setitem(sys.modules, module, None)  # imports fail as when none is installed
    with caplog.at_level(logging.INFO, logger=LOGGER):
        driver = host_driver(tmp_path)
        try:
            driver.start(lambda: None)
            wait_for(lambda: not driver._events._expected, "every source to give up")
            for _ in range(3):
                driver.scan()
                assert driver.poll_interval == 0.25
        finally:
            driver.close()
    lines = path_lines(caplog)
    assert len(lines) == 1 and lines[0].startswith("RDMA health and hot-plug are polled every 0.25 s"), lines
    for why in ("pyudev is not installed", "pyverbs is not available"):
        assert why in lines[0]


def real_sources_problem() -> str:
    try:
        import pyudev  # type: ignore[import-untyped,import-not-found,unused-ignore]

        pyudev.Context()
    except Exception as exc:  # noqa: BLE001 - nothing real to subscribe with here
        return f"pyudev or libudev is missing: {exc}"
    return ""


@pytest.mark.skipif(bool(real_sources_problem()), reason=real_sources_problem() or "runs")
def test_the_real_sources_subscribe_here_and_the_poll_goes_away(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "pyverbs", None)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        driver = host_driver(tmp_path)
        try:
            driver.start(lambda: None)
            wait_for(lambda: not driver._events._expected, "every source to settle")
            driver.scan()
        finally:
            driver.close()
    assert driver._events.live("uevents") and driver._events.live("links"), driver._events._why_not
    assert driver.poll_interval > 25  # no RDMA device here: nothing left to poll
    assert path_lines(caplog) == ["RDMA health is event-driven (kernel uevents, rtnetlink link events); "
                                  "a safety-net rescan runs every 30 s"]


@pytest.mark.parametrize(("written", "meant"), [(False, "off"), (True, "auto"), ("off", "off"), ("auto", "auto")])
def test_an_unquoted_off_in_yaml_turns_a_source_off(tmp_path: Path, written: object, meant: str) -> None:
    # YAML 1.1 (the config file, MULTIDP_RDMA_UDEV=off) reads off as false.
    driver = create_driver(multidp_rdma.plugin, {"udev": written, "verbs": written}, name="rdma",
                           sysfs_root=tmp_path, dev_root=tmp_path)
    assert isinstance(driver, RdmaDriver)
    assert driver.config.udev == meant and driver.config.verbs == meant
