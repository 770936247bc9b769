"""One multidp per plugin dir (issue 17 item 6): the instance lock, in-process and between real processes.

A second instance waits for the lock without touching the first's sockets, then takes over when
the first stops, or gives up past ``lockWait`` with a message naming the holder (exit 2).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import faults_helpers
import pytest
import yaml
from faults_helpers import RESOURCES, START_S, WIDGET, wait_full

from multidp.errors import ConfigError
from multidp.host.host import Host
from multidp.host.instancelock import DEFAULT_LOCK_WAIT_S, HOLDER_NAME, LOCK_NAME, InstanceLock, InstanceLocked
from multidp.host.instancelock import describe_holder as described
from multidp.plugins.registry import PluginRegistry
from multidp.serving.sockets import socket_name
from multidp.testing import KubeletStandIn, SamplePlugin, wait_until
from multidp.testing.host import make_settings

site, daemons = faults_helpers.site, faults_helpers.daemons  # fixtures


def held_by(directory: Path, pod: str = "old-pod") -> InstanceLock:
    lock = InstanceLock(directory, {"POD_NAME": pod})
    assert lock.acquire(0)
    return lock


def is_free(directory: Path) -> bool:
    probe = InstanceLock(directory, {})
    try:
        return probe.acquire(0)
    except InstanceLocked:
        return False
    finally:
        probe.release()


def in_thread(fn: Callable[..., object], *args: object) -> tuple[threading.Thread, list[object]]:
    """``fn(*args)`` on a thread; what it returned or raised lands in the list."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn(*args))
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# The lock itself ----------------------------------------------------------------------------------

def test_a_free_lock_is_taken_at_once_records_its_holder_and_is_released(tmp_path):
    lock = held_by(tmp_path, "multidp-x7k2p")
    assert (tmp_path / LOCK_NAME).is_dir()
    record = json.loads((tmp_path / LOCK_NAME / HOLDER_NAME).read_text())
    assert (record["pid"], record["pod"]) == (os.getpid(), "multidp-x7k2p")
    assert described(tmp_path / LOCK_NAME).startswith(f"pid {os.getpid()}, pod multidp-x7k2p, since 20")
    assert not is_free(tmp_path) and lock.acquire(0)  # taken again: still ours, no wait on itself
    lock.release()
    assert not (tmp_path / LOCK_NAME / HOLDER_NAME).exists()  # never names an instance that let go
    assert is_free(tmp_path)
    assert lock.acquire(0) is False  # release is final: a stopped host never takes it afterwards


def test_past_the_wait_the_error_names_the_holder_and_the_lock_and_the_wait_is_logged_once(tmp_path, caplog):
    held_by(tmp_path, "first-pod")
    caplog.set_level(logging.INFO, logger="multidp.host.instancelock")
    with pytest.raises(InstanceLocked) as raised:
        InstanceLock(tmp_path, {}).acquire(0.5)
    message = str(raised.value)
    assert f"another multidp (pid {os.getpid()}, pod first-pod, since " in message
    assert f"holds {tmp_path.absolute() / LOCK_NAME}; waited 0.5 s for it to stop; stop it first" in message
    assert isinstance(raised.value, ConfigError)  # exit 2 from the CLI
    waits = [r for r in caplog.records if "waiting up to 0.5 s for it to stop" in r.getMessage()]
    assert len(waits) == 1 and "pod first-pod" in waits[0].getMessage()


def test_a_waiter_takes_over_when_the_holder_lets_go(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="multidp.host.instancelock")
    first = held_by(tmp_path, "first-pod")
    second = InstanceLock(tmp_path, {"POD_NAME": "second-pod"})
    thread, out = in_thread(second.acquire, 60.0)
    wait_until(lambda: second.waiting_for is not None, what="the second waiting")
    assert second.waiting_for is not None and "pod first-pod" in second.waiting_for
    assert not second.held and out == []
    first.release()
    thread.join(10)
    assert out == [True] and second.held
    assert json.loads((tmp_path / LOCK_NAME / HOLDER_NAME).read_text())["pod"] == "second-pod"
    assert "took over" in caplog.text


def test_stopping_ends_the_wait_and_leaves_the_holder_alone(tmp_path):
    held_by(tmp_path)
    stopping = threading.Event()
    waiter = InstanceLock(tmp_path, {})
    thread, out = in_thread(waiter.acquire, 600.0, stopping)
    wait_until(lambda: waiter.waiting_for is not None, what="the waiter waiting")
    stopping.set()
    thread.join(10)
    assert out == [False] and not waiter.held
    assert not is_free(tmp_path)


def test_a_killed_holder_never_blocks_the_next(tmp_path):
    script = ("import sys, time\nfrom pathlib import Path\nfrom multidp.host.instancelock import InstanceLock\n"
              "assert InstanceLock(Path(sys.argv[1]), {'POD_NAME': 'doomed'}).acquire(0)\n"
              "print('held', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        with pytest.raises(InstanceLocked, match=f"pid {proc.pid}, pod doomed"):
            InstanceLock(tmp_path, {}).acquire(0)
    finally:
        proc.kill()  # SIGKILL: no cleanup runs; the kernel drops the flock
        proc.wait(10)
    assert InstanceLock(tmp_path, {}).acquire(10)


def test_a_kubelet_restart_removing_the_plugin_dirs_files_leaves_the_lock_in_place(tmp_path):
    held_by(tmp_path)
    # A starting kubelet removes every entry but directories and its checkpoint, in the versions that
    # remove non-sockets too (kubernetes pkg/kubelet/cm/devicemanager/manager.go, CleanupPluginDirectory).
    for path in tmp_path.iterdir():
        if path.name != "kubelet_internal_checkpoint" and not path.is_dir():
            path.unlink()
    assert (tmp_path / LOCK_NAME / HOLDER_NAME).exists()
    assert not is_free(tmp_path)


@pytest.mark.parametrize(("make", "why"), [
    (lambda p: p.write_text("not a lock"), "Not a directory"),
    (lambda p: p.symlink_to(p.parent / "elsewhere", target_is_directory=True), ""),  # never followed
])
def test_a_lock_path_that_is_not_our_directory_is_refused_by_name(tmp_path, make, why):
    (tmp_path / "elsewhere").mkdir()
    make(tmp_path / LOCK_NAME)
    with pytest.raises(ConfigError, match=f"pluginDir: cannot make or open the instance lock {tmp_path / LOCK_NAME} "
                                          f"\\(a directory\\): {why}"):
        InstanceLock(tmp_path, {}).acquire(0)


@pytest.mark.parametrize(("text", "expected"), [
    ('{"pid": 7, "pod": "multidp-abc", "since": "2025-01-02T03:04:05Z"}',
     "pid 7, pod multidp-abc, since 2025-01-02T03:04:05Z"),
    ('{"pid": 7}', "pid 7"),
    ('{"pid": true, "pod": ["x"]}', "holder not recorded"),
    ("[1, 2]", "holder not recorded"),
    ("{half a rec", "holder not recorded"),
    (None, "holder not recorded"),
])
def test_what_a_waiter_says_about_the_holder(tmp_path, text, expected):
    if text is not None:
        (tmp_path / HOLDER_NAME).write_text(text)
    assert described(tmp_path) == expected


# The host ----------------------------------------------------------------------------------------

@pytest.fixture
def old_instance(socket_dir: Path) -> Iterator[tuple[InstanceLock, Path, Path]]:
    """Another multidp holding the plugin dir: its lock, a live socket of its and its bind directory."""
    lock = held_by(socket_dir, "old-pod")
    path, private = socket_dir / "multidp-old-0a1b2c3d.sock", socket_dir / ".mdp-old"
    private.mkdir()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        yield lock, path, private
    lock.release()


def new_host(plugin_dir: Path, sample: SamplePlugin, lock_wait: float) -> Host:
    settings = make_settings(plugin_dir, lock_wait=lock_wait)
    settings.drivers = ["sample"]
    return Host(settings, PluginRegistry(extra={"sample": sample}), environ={"POD_NAME": "new-pod"})


def waiting(host: Host) -> bool:
    lock = getattr(host, "instance_lock", None)
    return lock is not None and lock.waiting_for is not None


def test_the_host_waits_touching_nothing_then_takes_over_sweeps_and_serves(socket_dir, kubelet, sample,
                                                                              old_instance):
    lock, live, private = old_instance
    inode = live.lstat().st_ino
    host = new_host(socket_dir, sample, 60.0)
    thread, out = in_thread(host.start)
    try:
        wait_until(lambda: waiting(host), what="the host waiting for the lock")
        assert live.lstat().st_ino == inode and private.is_dir()  # not swept while the other lives
        assert kubelet.registrations == [] and not host.started and not host.endpoints
        lock.release()  # the old instance stopped (and, killed, left its socket behind)
        thread.join(START_S)
        assert out == [None] and host.started
        kubelet.wait_registered(WIDGET)
        assert not live.exists() and not private.exists()  # swept once the lock was ours
        assert not is_free(socket_dir)
    finally:
        host.stop()
    assert is_free(socket_dir)  # released on stop


def test_stop_while_waiting_ends_start_and_starts_nothing(socket_dir, kubelet, sample, old_instance):
    _, live, private = old_instance
    host = new_host(socket_dir, sample, 600.0)
    thread, out = in_thread(host.start)
    wait_until(lambda: waiting(host), what="the host waiting for the lock")
    host.stop()  # SIGTERM
    thread.join(10)
    assert out == [None] and not host.started and not host.endpoints
    assert live.exists() and private.is_dir() and kubelet.registrations == []
    assert not is_free(socket_dir)  # the other instance still holds it


def test_past_lock_wait_start_fails_naming_the_holder_and_touches_nothing(socket_dir, sample, old_instance):
    _, live, private = old_instance
    host = new_host(socket_dir, sample, 0.4)
    with pytest.raises(InstanceLocked, match=r"another multidp \(pid \d+, pod old-pod, since .*\) holds .*; "
                                             r"waited 0.4 s for it to stop"):
        host.start()
    host.stop()
    assert live.exists() and private.is_dir() and not host.endpoints
    assert not is_free(socket_dir)


# Two real processes -------------------------------------------------------------------------------

def served_inodes(directory: Path) -> dict[str, int]:
    return {r: (directory / socket_name("sample", r)).lstat().st_ino for r in RESOURCES}


def test_a_second_multidp_waits_for_the_first_then_takes_over(kubelet, daemons):
    first = daemons(kubelet.directory, POD_NAME="first-pod")
    wait_full(kubelet)
    before = served_inodes(kubelet.directory)
    second = daemons(kubelet.directory, POD_NAME="second-pod")
    second.wait_log(f"another multidp (pid {first.pid}, pod first-pod, since ")
    assert served_inodes(kubelet.directory) == before  # none removed as "stale"
    assert all(kubelet.registration_count(r) == 1 for r in RESOURCES)
    assert kubelet.allocate(WIDGET, 2).envs["WIDGET_DEVICES"]  # the first serves on
    assert first.stop() == 0
    second.wait_log(f"took over {kubelet.directory.absolute() / LOCK_NAME}")
    wait_full(kubelet, count=2)
    assert all(kubelet.registration_count(r) == 2 for r in RESOURCES)
    assert second.stop() == 0
    assert first.problems() == [] and second.problems() == []


def test_a_second_multidp_gives_up_past_lock_wait_with_exit_2(kubelet: KubeletStandIn, daemons, site, tmp_path):
    first = daemons(kubelet.directory, POD_NAME="first-pod")
    wait_full(kubelet)
    before = served_inodes(kubelet.directory)
    second = faults_helpers.Daemon(site, kubelet.directory, tmp_path / "cdi", POD_NAME="second-pod",
                                   MULTIDP_LOCK_WAIT="1")
    try:
        second.start()
        assert second.proc is not None and second.proc.wait(START_S) == 2
    finally:
        second.close()
    second.wait_log(f"multidp: another multidp (pid {first.pid}, pod first-pod, since ")
    second.wait_log(f"holds {kubelet.directory.absolute() / LOCK_NAME}; waited 1 s for it to stop")
    assert "Traceback" not in second.log
    assert served_inodes(kubelet.directory) == before
    assert all(kubelet.registration_count(r) == 1 for r in RESOURCES)
    assert kubelet.allocate(WIDGET, 2).envs["WIDGET_DEVICES"]
    assert first.stop() == 0


def test_the_daemonset_never_runs_two_pods_and_kills_the_old_one_within_lock_wait():
    """maxSurge 0: a rollout never starts the new pod beside the old, so it cannot deadlock on the
    lock (a surge pod waiting for an old one that waits for the surge to be ready). The grace period
    bounds how long an old pod may take to stop, within the new one's default wait."""
    daemonset = yaml.safe_load((Path(__file__).parents[1] / "deploy/base/daemonset.yaml").read_text())
    assert daemonset["spec"]["updateStrategy"]["rollingUpdate"].get("maxSurge", 0) == 0  # 0 is the default
    assert daemonset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] <= DEFAULT_LOCK_WAIT_S


@pytest.mark.parametrize(("env", "message"), [
    ({"MULTIDP_LOCK_WAIT": "-1"}, "MULTIDP_LOCK_WAIT: must be a number of seconds, 0 or more, not -1.0"),
    ({"MULTIDP_LOCK_WAIT": "soon"}, "MULTIDP_LOCK_WAIT: 'soon' is not a number of seconds"),
])
def test_a_bad_lock_wait_is_named(env, message):
    from multidp.config.settings import load_settings
    from multidp.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings({}, env)
