"""``multidp kubelet``: the stand-in as its own process, with a real ``multidp run`` registering to it."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

from test_cli import env_with, run, site, start, stop  # noqa: F401 - site is a fixture

from multidp.testing import short_socket_dir

WIDGET = "example.com/widget"


class Lines:
    """A process's stdout, line by line, read on a thread so that a test can wait with a bound."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: [self.lines.put(line.rstrip("\n")) for line in stream], daemon=True).start()

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                got = "\n".join(self.seen)
                raise AssertionError(f"no line with {text!r} within {timeout} s; got:\n{got}") from None
            self.seen.append(line)
            if text in line:
                return line


def test_kubelet_command_shows_registration_devices_allocation_and_restart(site: Path) -> None:  # noqa: F811
    directory = short_socket_dir("mdp-k")
    kubelet = subprocess.Popen([sys.executable, "-m", "multidp", "kubelet", "--plugin-dir", str(directory),
                                "--allocate", f"{WIDGET}=2"], env=env_with(site), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        out = Lines(kubelet)
        out.wait_for(f"serving {directory}/kubelet.sock")
        host = start(["run", "--plugin-dir", str(directory), "--drivers", "sample",
                      "--cdi-dir", str(directory / "cdi")], env_with(site))
        try:
            assert "preferred allocation: yes" in out.wait_for(f"registered {WIDGET} from multidp-sample-")
            out.wait_for(f"{WIDGET}: capacity 4, allocatable 4")
            assert out.wait_for("  + widget-").endswith("Healthy NUMA 0")
            allocated = out.wait_for("allocated widget-")
            assert allocated.endswith(f"of {WIDGET}:") and allocated.count("widget-") == 2
            out.wait_for("  env WIDGET_DEVICES=widget-")
            kubelet.send_signal(signal.SIGHUP)
            out.wait_for("kubelet restarted")
            out.wait_for(f"registered {WIDGET} from multidp-sample-")  # the host noticed and registered again
        finally:
            code, err = stop(host)
        assert code == 0, err
        out.wait_for("stream ended: every device Unhealthy")
        kubelet.send_signal(signal.SIGTERM)
        out.wait_for("kubelet stand-in: stopped")
    except BaseException:  # a failed wait above must not leave the stand-in running
        kubelet.send_signal(signal.SIGTERM)
        raise
    finally:
        try:
            kubelet.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kubelet.kill()
    assert kubelet.wait(timeout=20) == 0


def test_kubelet_command_refuses_a_bad_allocate_flag(site: Path) -> None:  # noqa: F811
    result = run(["kubelet", "--allocate", "example.com/widget"], env_with(site))
    assert result.returncode == 2 and "--allocate 'example.com/widget': write RESOURCE=N" in result.stderr
