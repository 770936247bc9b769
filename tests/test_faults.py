"""Faults a real node sees, against the real ``multidp run`` process (docs/security.md).

Each test starts the daemon as the DaemonSet does (a subprocess, its drivers
found through entry points) and plays the kubelet with the stand-in. Every wait
is bounded; no test asserts a speed.
"""

from __future__ import annotations

import errno
import shutil
import socket as sockets
import stat
import threading
from pathlib import Path

import faults_helpers
import pytest
from faults_helpers import RESOURCES, SHARED, START_S, WIDGET, expected_sockets, our_sockets, wait_full

from multidp.testing import KubeletStandIn, wait_until

site, daemons = faults_helpers.site, faults_helpers.daemons  # fixtures


class CountingKubelet(KubeletStandIn):
    """The stand-in, also counting the Register calls that arrive (answered or not)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.arrivals: list[str] = []

    def Register(self, request, context):  # noqa: N802 - gRPC's name
        with self._cond:
            self.arrivals.append(request.resource_name)
            self._cond.notify_all()
        return super().Register(request, context)


def test_kill_9_then_start_again_removes_stale_sockets_and_loses_nothing(kubelet, daemons):
    first = daemons(kubelet.directory)
    before = wait_full(kubelet)
    assert kubelet.allocate(WIDGET, 2).envs["WIDGET_DEVICES"]
    first.kill()
    # The kubelet sees the streams end (devices Unhealthy); our sockets stay behind, nobody removed them.
    for resource in RESOURCES:
        kubelet.wait_devices(resource, lambda v: not v.stream_open and v.allocatable == 0, START_S, "stream ended")
    stale = our_sockets(kubelet.directory)
    assert stale == expected_sockets()
    assert all(stat.S_ISSOCK((kubelet.directory / name).lstat().st_mode) for name in stale)

    second = daemons(kubelet.directory)
    for name in stale:
        second.wait_log(f"removing stale socket {kubelet.directory / name}")
    after = wait_full(kubelet, count=2)
    assert after == before  # no device lost, none invented
    kubelet.free(WIDGET)
    assert kubelet.allocate(WIDGET, 4).envs["WIDGET_DEVICES"]
    assert kubelet.allocate(SHARED, 1).envs["WIDGET_SHARED_DEVICES"] == "widget-shared-0"
    assert our_sockets(kubelet.directory) == expected_sockets()  # no temporary name left over either
    assert kubelet.errors == []
    assert second.stop() == 0
    assert our_sockets(kubelet.directory) == []
    assert second.problems() == []


def test_kubelet_absent_at_start_then_arriving(socket_dir, daemons):
    daemon = daemons(socket_dir)
    for resource in RESOURCES:
        daemon.wait_log(f"resource {resource}: waiting for the kubelet: {socket_dir / 'kubelet.sock'} does not exist")
    # Our sockets are served already; the kubelet dials them back inside Register.
    wait_until(lambda: our_sockets(socket_dir) == expected_sockets(), START_S, "our sockets served")
    kubelet = KubeletStandIn(socket_dir).start()
    try:
        wait_full(kubelet)
        assert kubelet.allocate(WIDGET, 1).envs["WIDGET_DEVICES"]
        assert [kubelet.registration_count(r) for r in RESOURCES] == [1, 1]
        assert kubelet.errors == []
    finally:
        kubelet.shutdown()
    assert daemon.stop() == 0


@pytest.mark.parametrize("how", ["stall", "hang"])
def test_kubelet_accepting_but_never_answering_register(socket_dir, tmp_path, daemons, how):
    """``stall``: Register hangs for the widget only; ``hang``: for every resource."""
    config = tmp_path / "multidp.yaml"
    config.write_text("timeouts:\n  register: 1\n")
    kubelet = CountingKubelet(socket_dir)
    stuck = [WIDGET] if how == "stall" else list(RESOURCES)
    if how == "stall":
        kubelet.stall = {WIDGET}
    else:
        kubelet.hang = True
    kubelet.start()
    try:
        daemon = daemons(socket_dir, config=config)
        for resource in stuck:
            line = daemon.wait_log(f"resource {resource}: registration failed, retrying in")
            assert f"the kubelet at {socket_dir / 'kubelet.sock'} did not answer within 1 s" in line
        if how == "stall":  # the other resource is not held back
            kubelet.wait_devices(SHARED, lambda v: v.allocatable == 4, START_S, "the shared widgets")
            assert kubelet.allocate(SHARED, 1).envs["WIDGET_SHARED_DEVICES"] == "widget-shared-0"
        for resource in stuck:  # it keeps trying (the reason is logged once, not at every retry)
            kubelet.wait_for(lambda r=resource: kubelet.arrivals.count(r) >= 3, START_S, f"{resource} retried")
        assert all(kubelet.registration_count(r) == 0 for r in stuck)
        # The kubelet answers again (the handlers it left hanging are let go).
        kubelet.stall, kubelet.hang = set(), False
        kubelet._stop_hang.set()
        wait_full(kubelet)
        assert [kubelet.registration_count(r) for r in RESOURCES] == [1, 1]  # once each, no duplicate Register
        assert kubelet.allocate(WIDGET, 2).envs["WIDGET_DEVICES"]
        assert kubelet.errors == []
    finally:
        kubelet.shutdown()
    assert daemon.stop() == 0


def remove_tree(path: Path) -> None:
    """rmtree while the daemon runs: it binds a socket again when its file goes, so a pass can race
    one it just re-created ("Directory not empty"); the next pass removes that too."""
    for _ in range(50):
        try:
            shutil.rmtree(path)
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise
    raise AssertionError(f"{path} kept filling up while it was removed")


@pytest.mark.parametrize("how", ["removed", "moved away"])
def test_plugin_dir_removed_and_created_again_under_the_running_process(kubelet, daemons, how):
    daemon = daemons(kubelet.directory)
    wait_full(kubelet)
    kubelet.stop()
    if how == "moved away":  # then removed: the watch on the old directory follows it
        gone = kubelet.directory.with_name(kubelet.directory.name + "-old")
        kubelet.directory.rename(gone)
        shutil.rmtree(gone)
    else:
        remove_tree(kubelet.directory)
    daemon.wait_log(f"plugin dir {kubelet.directory} was removed")
    kubelet.directory.mkdir()
    kubelet.restart()  # as the kubelet does at start: its directory, then a new kubelet.sock
    daemon.wait_log(f"plugin dir {kubelet.directory} is back")
    wait_full(kubelet, count=2)
    assert our_sockets(kubelet.directory) == expected_sockets()
    assert kubelet.allocate(WIDGET, 4).envs["WIDGET_DEVICES"]
    assert kubelet.errors == []
    assert daemon.stop() == 0
    assert our_sockets(kubelet.directory) == []


# 100 kubelet restarts ---------------------------------------------------------------------------------------

class BriskKubelet(KubeletStandIn):
    """The stand-in, restarting briskly: its socket goes first, its old connections close in the background.

    Closing a grpc channel takes about 0.1 s; a real kubelet's connections die with its
    process, so the restarts follow each other faster here, which is harder on the host.
    kubelet.sock is removed before the server stops, which narrows (it cannot close) the
    race that test_register_in_flight_when_the_kubelet_restarts pins down.
    """

    def stop(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        super().stop()

    def _close(self, view):
        channel, view.channel = view.channel, None
        if channel is not None:
            threading.Thread(target=channel.close, name="close", daemon=True).start()


def test_a_hundred_kubelet_restarts_in_a_row_lose_nothing(socket_dir, daemons, request):
    kubelet = BriskKubelet(socket_dir).start()
    request.addfinalizer(kubelet.shutdown)
    daemon = daemons(kubelet.directory)
    before = wait_full(kubelet)
    for round_ in range(100):
        kubelet.restart()  # every socket in the dir removed, then a new kubelet.sock
        after = wait_full(kubelet, count=round_ + 2)
        assert after == before, f"restart {round_ + 1}"
    # One Register per kubelet and resource, and never a dial that failed (the races that once
    # broke this are pinned down by their own tests below).
    assert [kubelet.registration_count(r) for r in RESOURCES] == [101, 101]
    assert kubelet.errors == []
    assert kubelet.allocate(WIDGET, 4).envs["WIDGET_DEVICES"]
    assert kubelet.allocate(SHARED, 1).envs["WIDGET_SHARED_DEVICES"] == "widget-shared-0"
    assert our_sockets(kubelet.directory) == expected_sockets()
    assert daemon.stop() == 0
    assert daemon.problems() == []


def test_register_in_flight_when_the_kubelet_restarts(kubelet, daemons):
    """The kubelet dies leaving its socket behind while multidp is registering; a new kubelet starts."""
    daemon = daemons(kubelet.directory)
    wait_full(kubelet)
    kubelet.stop()
    # The dead kubelet's socket: it takes connections and drops them, as no kubelet answers.
    attempts: list[int] = []
    done = threading.Event()
    dead = sockets.socket(sockets.AF_UNIX)
    dead.bind(str(kubelet.socket_path))
    dead.listen(16)
    dead.settimeout(0.05)

    def drop_connections() -> None:
        while not done.is_set():
            try:
                connection, _ = dead.accept()
            except TimeoutError:
                continue
            attempts.append(1)
            connection.close()

    dropper = threading.Thread(target=drop_connections, name="dead-kubelet", daemon=True)
    dropper.start()
    try:
        wait_until(lambda: len(attempts) >= 4, START_S, "multidp trying to register with the dead kubelet")
    finally:
        done.set()
        dropper.join(START_S)
        dead.close()
    kubelet.restart()  # every socket removed (ours, the dead kubelet.sock), then a new kubelet.sock
    wait_full(kubelet, count=2)
    assert kubelet.errors == []  # the kubelet never dialled a socket that was not there
    assert daemon.stop() == 0


def test_modes_the_security_review_relies_on(kubelet, daemons, tmp_path):
    """docs/security.md: our sockets are 0600 (only root, the kubelet, can connect), CDI specs 0644."""
    daemon = daemons(kubelet.directory)
    wait_full(kubelet)
    for name in expected_sockets():
        assert stat.S_IMODE((kubelet.directory / name).lstat().st_mode) == 0o600
    wait_until(lambda: any((tmp_path / "cdi").glob("multidp-*.json")), START_S, "the CDI spec written")
    for spec in (tmp_path / "cdi").glob("multidp-*.json"):
        assert stat.S_IMODE(spec.lstat().st_mode) == 0o644
    assert daemon.stop() == 0
