"""Lifecycle over real sockets: kubelet restarts, absence, refusals, withdrawals, shutdown."""

from __future__ import annotations

import logging
import shutil
import socket
import stat

from multidp.serving.sockets import socket_name
from multidp.testing import KubeletStandIn, running_host, v1beta1, wait_until

WIDGET = "example.com/widget"
SHARED = "example.com/widget-shared"
RESOURCES = (WIDGET, SHARED)



def our_sockets(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("multidp-"))


def test_twenty_kubelet_restarts_in_a_row_lose_nothing(kubelet, multidp_host, sample):
    multidp_host({"sample": sample})
    for resource in RESOURCES:
        kubelet.wait_devices(resource, lambda v: v.capacity == 4)
    for round_ in range(20):
        kubelet.restart()
        for resource in RESOURCES:
            kubelet.wait_registered(resource, count=round_ + 2)
            view = kubelet.wait_devices(resource, lambda v: v.allocatable == 4 and v.stream_open,
                                        what=f"full list after restart {round_ + 1}")
            assert view.capacity == 4
    assert kubelet.allocate(WIDGET, 4).envs["WIDGET_DEVICES"]
    assert kubelet.errors == []
    assert our_sockets(kubelet.directory) == sorted(socket_name("sample", r) for r in RESOURCES)


def private_sockets(directory) -> list:
    """Sockets bound in our private directories, waiting to be renamed into place."""
    return [p / "s" for p in directory.glob(".mdp-*") if (p / "s").exists()]


def test_a_kubelet_restart_is_served_by_the_spare_servers_started_ahead(kubelet, multidp_host, sample):
    host = multidp_host({"sample": sample})
    for resource in RESOURCES:
        kubelet.wait_devices(resource, lambda v: v.capacity == 4)

    def spares_ready() -> bool:
        return all(e._spare is not None for e in host.endpoints.values())

    wait_until(spares_ready, what="a spare server per resource")
    assert len(private_sockets(kubelet.directory)) == 2
    spares = {p.lstat().st_ino for p in private_sockets(kubelet.directory)}
    for private in private_sockets(kubelet.directory):
        assert stat.S_IMODE(private.parent.lstat().st_mode) == 0o700
        assert stat.S_IMODE(private.lstat().st_mode) == 0o600
    kubelet.restart()
    for resource in RESOURCES:
        kubelet.wait_registered(resource, count=2)
        kubelet.wait_devices(resource, lambda v: v.allocatable == 4 and v.stream_open)
    # The sockets in place now are the spares, renamed (same inodes); new spares follow.
    served = {(kubelet.directory / socket_name("sample", r)).lstat().st_ino for r in RESOURCES}
    assert served == spares
    wait_until(spares_ready, what="new spares")
    assert not spares & {p.lstat().st_ino for p in private_sockets(kubelet.directory)}
    assert kubelet.allocate(WIDGET, 2).envs["WIDGET_DEVICES"]


def test_stale_sockets_of_ours_are_removed_at_start(socket_dir, kubelet, sample):
    stale = socket_dir / "multidp-gone-12345678.sock"
    foreign = socket_dir / "other-plugin.sock"
    for path in (stale, foreign):
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))
    with running_host(socket_dir, {"sample": sample}):
        kubelet.wait_registered(WIDGET)
        assert not stale.exists()
        assert stat.S_ISSOCK(foreign.lstat().st_mode)


def test_kubelet_absent_at_start_then_arriving(socket_dir, sample, caplog):
    caplog.set_level(logging.WARNING)
    with running_host(socket_dir, {"sample": sample}) as host:
        wait_until(lambda: "does not exist yet" in caplog.text, what="a log line saying why")
        assert host.endpoints[WIDGET].registered is False
        kubelet = KubeletStandIn(socket_dir).start()
        try:
            for resource in RESOURCES:
                kubelet.wait_registered(resource)
                kubelet.wait_devices(resource, lambda v: v.capacity == 4)
        finally:
            kubelet.shutdown()


def test_kubelet_refusing_then_accepting(socket_dir, sample, caplog):
    kubelet = KubeletStandIn(socket_dir)
    kubelet.refuse = "not today"
    kubelet.start()
    try:
        with running_host(socket_dir, {"sample": sample}):
            wait_until(lambda: "the kubelet refused: not today" in caplog.text, what="the refusal logged")
            kubelet.refuse = None
            kubelet.wait_registered(WIDGET, timeout=15)
            kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    finally:
        kubelet.shutdown()


def test_a_stalled_registration_does_not_hold_back_other_resources(socket_dir, sample):
    kubelet = KubeletStandIn(socket_dir)
    kubelet.stall = {WIDGET}
    kubelet.start()
    try:
        with running_host(socket_dir, {"sample": sample}, timeouts={"register": 30}):
            kubelet.wait_devices(SHARED, lambda v: v.capacity == 4)
            assert kubelet.registration_count(WIDGET) == 0
    finally:
        kubelet.shutdown()


def test_own_socket_deleted_is_served_and_registered_again(kubelet, multidp_host, sample):
    multidp_host({"sample": sample})
    kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    (kubelet.directory / socket_name("sample", WIDGET)).unlink()
    kubelet.wait_registered(WIDGET, count=2)
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4 and v.stream_open)
    assert kubelet.registration_count(SHARED) == 1


def test_a_resource_that_goes_away_sends_an_empty_list_then_stops(kubelet, multidp_host, sample):
    multidp_host({"sample": sample})
    view = kubelet.wait_devices(SHARED, lambda v: v.capacity == 4)
    sample.hardware.remove(SHARED)
    kubelet.wait_devices(SHARED, lambda v: v.capacity == 0 and not v.stream_open, what="empty list, then end")
    assert view.devices == {}
    wait_until(lambda: not (kubelet.directory / socket_name("sample", SHARED)).exists(), what="socket removed")
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)


def test_plugin_dir_removed_and_created_again(kubelet, multidp_host, sample):
    multidp_host({"sample": sample})
    kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    kubelet.stop()
    # Moved away, then removed: the host keeps re-creating its sockets meanwhile.
    gone = kubelet.directory.with_name(kubelet.directory.name + "-old")
    kubelet.directory.rename(gone)
    shutil.rmtree(gone, ignore_errors=True)
    kubelet.directory.mkdir()
    kubelet.restart()
    for resource in RESOURCES:
        kubelet.wait_registered(resource, count=2, timeout=15)
        kubelet.wait_devices(resource, lambda v: v.allocatable == 4 and v.stream_open)


def test_failed_scans_mark_devices_unhealthy_until_a_scan_works(kubelet, multidp_host, sample, caplog):
    multidp_host({"sample": sample}, drivers={"sample": {"pollInterval": 0.05}}, timeouts={"scan": 0.2})
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)
    for fault in ("raise", 1.0):
        sample.driver.faults["scan"] = fault
        view = kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 0, what=f"unhealthy after scan {fault}")
        assert sorted(view.devices) == ["widget-0", "widget-1", "widget-2", "widget-3"]
        sample.driver.faults.clear()
        kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4, what="healthy again")
    assert "its devices are Unhealthy until a scan succeeds" in caplog.text


def test_clean_shutdown_removes_our_sockets(kubelet, sample):
    with running_host(kubelet.directory, {"sample": sample}) as host:
        for resource in RESOURCES:
            kubelet.wait_devices(resource, lambda v: v.capacity == 4)
        wait_until(lambda: all(e._spare is not None for e in host.endpoints.values()), what="spare servers")
    assert our_sockets(kubelet.directory) == []
    assert list(kubelet.directory.glob(".mdp-*")) == []  # the spares' private dirs too
    kubelet.wait_devices(WIDGET, lambda v: not v.stream_open, what="stream closed")
    assert sample.driver.closed


def test_a_reload_that_turns_pre_start_on_registers_again_with_the_new_options(kubelet, sample):
    """The kubelet reads the options only while registering: a reload that changes them must register
    again, or the kubelet never calls PreStartContainer (or keeps calling one the driver lost)."""
    from multidp.testing.host import make_settings

    with running_host(kubelet.directory, {"sample": sample}) as host:
        first = kubelet.wait_registered(WIDGET)
        assert first.options.pre_start_required is False
        for pre_start, registrations in ((True, 2), (False, 3)):
            new = make_settings(kubelet.directory, {"sample": {"preStart": pre_start}})
            new.drivers = ["sample"]
            host.reload(new)
            again = kubelet.wait_registered(WIDGET, count=registrations)
            assert again.options.pre_start_required is pre_start
            view = kubelet.wait_devices(WIDGET, lambda v, want=pre_start: v.stream_open and v.allocatable == 4 and
                                        v.options is not None and v.options.pre_start_required is want,
                                        what="the new stream")
            assert view.options.pre_start_required is pre_start
        # pre_start is the driver's, so its other resource registered again too.
        kubelet.wait_registered(SHARED, count=3)
        new = make_settings(kubelet.directory, {"sample": {"preStart": True}})
        new.drivers = ["sample"]
        host.reload(new)
        kubelet.wait_registered(WIDGET, count=4)
        kubelet.stub(WIDGET).PreStartContainer(v1beta1.PreStartContainerRequest(devices_ids=["widget-1"]), timeout=5)
        assert ("pre_start", (WIDGET, ("widget-1",))) in sample.drivers[-1].calls


def test_reload_applies_new_config_without_reregistering(kubelet, sample):
    from multidp.testing.host import make_settings

    with running_host(kubelet.directory, {"sample": sample}) as host:
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
        new = make_settings(kubelet.directory, {"sample": {"resources": {WIDGET: {"count": 2}}}})
        new.drivers = ["sample"]
        sample.hardware = None  # the new config builds new "hardware"
        host.reload(new)
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2, what="the new inventory")
        kubelet.wait_devices(SHARED, lambda v: v.capacity == 0, what="the dropped resource withdrawn")
        assert kubelet.registration_count(WIDGET) == 1
        assert sample.drivers[0].closed and not sample.drivers[1].closed
        new_disabled = make_settings(kubelet.directory, {"sample": {"enabled": False}})
        new_disabled.drivers = ["sample"]
        host.reload(new_disabled)
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 0 and not v.stream_open, what="driver disabled")
        assert host.statuses["sample"].state == "disabled"


def test_a_reload_under_simulate_keeps_the_simulation_folder_until_stop(kubelet, sample, caplog):
    caplog.set_level(logging.INFO, logger="multidp.plugins.factory")
    # The folder belongs to the host's driver factory; a reload makes a new factory, and the old one,
    # once dropped, used to delete the folder under the drivers still running on its trees.
    import gc

    from multidp.testing.host import make_settings

    with running_host(kubelet.directory, {"sample": sample}, simulate=True) as host:
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
        folder = host.factory.workdir
        assert folder.is_dir()
        assert f"driver sample: simulated hardware in {folder / 'sample'}" in caplog.text  # where to look
        new = make_settings(kubelet.directory, {"sample": {}}, simulate=True)
        new.drivers = ["sample"]
        host.reload(new)
        gc.collect()
        assert host.factory.workdir == folder and folder.is_dir()
    assert not folder.exists()  # removed at stop, as before
