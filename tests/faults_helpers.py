"""Helpers for the fault tests: a real ``multidp run`` process, watched as an operator would watch it.

A unique module name (test suites run together). The sample driver reaches the
subprocess through a fake distribution (a real entry point), as in test_cli.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from multidp.serving.sockets import socket_name
from multidp.testing import KubeletStandIn, fake_distribution

WIDGET = "example.com/widget"
SHARED = "example.com/widget-shared"
RESOURCES = (WIDGET, SHARED)
START_S = 30.0  # generous bounds: a 2-core machine running other suites beside this one
STOP_S = 20.0
WATCHDOG_STOP_RACE = "InotifyEmitter.queue_events() called when the thread is inactive"


def make_site(root: Path) -> Path:
    """A folder with the sample driver declared as the distribution multidp-sample."""
    site = root / "site"
    site.mkdir(exist_ok=True)
    fake_distribution(site, "multidp-sample", {"sample": "multidp.testing.sample_plugin"})
    return site


def our_sockets(directory: Path) -> list[str]:
    """Every entry of ours in the plugin dir, temporary names included."""
    return sorted(p.name for p in directory.iterdir() if p.name.lstrip(".").startswith("multidp-"))


def expected_sockets(driver: str = "sample", resources: tuple[str, ...] = RESOURCES) -> list[str]:
    return sorted(socket_name(driver, r) for r in resources)



class Daemon:
    """``python -m multidp run`` in a subprocess; its stderr (the log) is collected line by line."""

    def __init__(self, site: Path, plugin_dir: Path, cdi_dir: Path, *args: str, config: Path | None = None,
                 **env: str) -> None:
        self.argv = [sys.executable, "-m", "multidp", "run", "--plugin-dir", str(plugin_dir), "--drivers", "sample",
                     "--cdi-dir", str(cdi_dir), *args]
        if config is not None:
            self.argv += ["--config", str(config)]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_")}
        self.env["PYTHONPATH"] = os.pathsep.join([str(site), self.env.get("PYTHONPATH", "")])
        self.env.update(env)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Daemon:
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True, name="daemon-log").start()
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log(self) -> str:
        with self._cond:
            return "".join(self.lines)

    def wait_log(self, text: str, timeout: float = START_S, count: int = 1) -> str:
        """Wait until ``count`` log lines contain ``text``; return the last of them."""
        with self._cond:
            found = self._cond.wait_for(lambda: sum(text in line for line in self.lines) >= count, timeout)
            if not found:
                raise AssertionError(f"timed out after {timeout} s waiting for {count} log line(s) with {text!r}; "
                                     f"log so far:\n{''.join(self.lines)[-4000:]}")
            return [line for line in self.lines if text in line][-1]

    def rss_kb(self) -> int:
        """Resident memory of the process (VmRSS, kB), as /proc shows it."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def kill(self) -> None:
        """kill -9: no cleanup of any kind runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_S)

    def stop(self) -> int:
        """SIGTERM, as the kubelet stops a pod; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_S)
            raise AssertionError(f"multidp did not stop within {STOP_S} s of SIGTERM") from None

    def close(self) -> None:
        """For teardown: make sure the process is gone, whatever happened in the test."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_S)

    def problems(self) -> list[str]:
        """Log lines that would worry an operator: errors and tracebacks.

        Left out: watchdog's "queue_events() called when the thread is inactive", which
        watchdog itself logs at ERROR now and then when its observer stops (a race in
        watchdog's observer shutdown, not in multidp). Its own test would be flaky, not strict.
        """
        return [line for line in self.lines if (" ERROR " in line or "Traceback" in line)
                and WATCHDOG_STOP_RACE not in line]


# Fixtures (test modules import them by name) and waits ---------------------------------------------------

@pytest.fixture
def site(tmp_path: Path) -> Path:
    return make_site(tmp_path)


@pytest.fixture
def daemons(site: Path, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """``daemons(plugin_dir, *args, config=None, **env)`` starts a ``multidp run``; all are killed at teardown."""
    started: list[Daemon] = []

    def start(plugin_dir: Path, *args: str, config: Path | None = None, **env: str) -> Daemon:
        daemon = Daemon(site, plugin_dir, tmp_path / "cdi", *args, config=config, **env).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()


def wait_full(kubelet: KubeletStandIn, count: int = 1, timeout: float = START_S) -> dict[str, list[str]]:
    """Every resource registered ``count`` times, its full list allocatable, its stream open; the IDs."""
    ids = {}
    for resource in RESOURCES:
        kubelet.wait_registered(resource, count=count, timeout=timeout)
        view = kubelet.wait_devices(resource, lambda v: v.allocatable == 4 and v.stream_open, timeout,
                                    "the full list, every device Healthy")
        ids[resource] = sorted(view.devices)
    return ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
