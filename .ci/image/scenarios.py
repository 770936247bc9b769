"""What the image check runs in the built image, the same for podman and for the chroot fallback.

Every scenario runs the image as the shipped DaemonSet runs it (podspec.PodRun: every capability dropped,
read-only root, the DaemonSet's mounts and env, hostNetwork) and raises CheckFailed with the evidence.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from podspec import PLUGIN_DIR, PodRun

HERE = Path(__file__).resolve().parent
DRIVERS = ("nvidia", "rdma", "fpga")
ALLOCATE = ("nvidia.com/gpu", "rdma/hca")
NET_CLASS = Path("/sys/class/net")


class CheckFailed(AssertionError):
    pass


class Handle(Protocol):
    def output(self) -> str: ...
    def signal(self, name: str) -> None: ...
    def stop(self, timeout_s: int) -> int: ...


class Runner(Protocol):
    def run(self, image: str, pod: PodRun, args: Sequence[str], timeout: float = 300,
            entrypoint: str | None = None) -> object: ...
    def start(self, name: str, image: str, pod: PodRun, args: Sequence[str],
              entrypoint: str | None = None) -> Handle: ...


def _run(runner: Runner, image: str, pod: PodRun, args: Sequence[str], entrypoint: str | None = None) -> str:
    done = runner.run(image, pod, args, entrypoint=entrypoint)
    code, out, err = (getattr(done, name) for name in ("returncode", "stdout", "stderr"))
    if code != 0:
        raise CheckFailed(f"{entrypoint or 'multidp'} {' '.join(args)[:80]} exited {code}:\n{out}{err}")
    return str(out)


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float, evidence: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise CheckFailed(f"no {what} within {timeout_s:.0f} s\n{evidence()}")
        time.sleep(0.25)


def tail(text: str, lines: int = 40) -> str:
    return "".join(text.splitlines(keepends=True)[-lines:])


def check_drivers(runner: Runner, image: str, pod: PodRun, say: Callable[[str], None]) -> None:
    """`multidp drivers --json` under the DaemonSet's flags and mounts: every driver loads."""
    report = json.loads(_run(runner, image, pod, ["drivers", "--json"]))
    states = {d["name"]: d["status"] for d in report["drivers"]}
    say(f"drivers: {states}")
    if any(states.get(name) != "ok" for name in DRIVERS):
        raise CheckFailed(f"drivers not all loaded: {states}")


def check_registration(runner: Runner, image: str, pod: PodRun, probe_port: int,
                       say: Callable[[str], None]) -> None:
    """Register with the kubelet stand-in (simulated hardware), allocate, survive a kubelet restart, stop."""
    plugin_bind = pod.bind_for(PLUGIN_DIR)
    standin_pod = PodRun([plugin_bind], [], {}, "0:0", False, [], [], False, False, [])
    allocate = [arg for resource in ALLOCATE for arg in ("--allocate", f"{resource}=1")]
    kubelet = runner.start("multidp-check-kubelet", image, standin_pod,
                           ["kubelet", "--plugin-dir", PLUGIN_DIR, *allocate])
    plugin: Handle | None = None
    try:
        wait_for("kubelet stand-in", lambda: "kubelet stand-in: serving" in kubelet.output(), 60, kubelet.output)
        plugin = runner.start("multidp-check-plugin", image, pod.with_env(MULTIDP_SIMULATE="1"), pod.args)
        running = plugin

        def evidence() -> str:
            return f"--- kubelet stand-in:\n{tail(kubelet.output())}--- multidp:\n{tail(running.output())}"

        wanted = [f"registered {r} from" for r in ALLOCATE] + ["registered fpga.intel.com/"]
        wanted += [f"of {r}:" for r in ALLOCATE]
        wait_for("registration and allocation", lambda: all(w in kubelet.output() for w in wanted), 120, evidence)
        say("registration: " + "; ".join(ln for ln in kubelet.output().splitlines() if ln.startswith("registered")))
        say("allocation: " + "; ".join(ln for ln in kubelet.output().splitlines() if ln.startswith("allocated")))
        if pod.host_network:
            _check_probe(probe_port, evidence)
            say(f"probes: http://127.0.0.1:{probe_port}/readyz answers 200 (hostNetwork)")
        kubelet.signal("HUP")
        wait_for("registration after a kubelet restart",
                 lambda: kubelet.output().count("registered nvidia.com/gpu from") >= 2, 90, evidence)
        say("kubelet restart: every resource registered again")
        code, plugin = plugin.stop(35), None
        log = running.output()
        if code != 0 or "stopping" not in log:
            raise CheckFailed(f"multidp did not stop cleanly on SIGTERM (exit {code})\n{tail(log)}")
        say("shutdown: SIGTERM -> exit 0")
    finally:
        if plugin is not None:
            plugin.stop(5)
        kubelet.stop(10)


def _check_probe(port: int, evidence: Callable[[], str]) -> None:
    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as answer:
                return int(answer.status) == 200
        except OSError:
            return False

    wait_for(f"200 from /readyz on port {port}", ready, 60, evidence)


def physical_netdev() -> str | None:
    """A netdev that is not virtual: a uevent for it is one the RDMA driver acts on (lo, veths are ignored)."""
    for path in sorted(NET_CLASS.iterdir()):
        if "/devices/virtual/" not in str(path.resolve()):
            return path.name
    return None


def check_uevent(runner: Runner, image: str, pod: PodRun, say: Callable[[str], None]) -> None:
    """A kernel uevent the host emits reaches pyudev and the RDMA driver's uevent source inside the container."""
    if not pod.host_network:
        raise CheckFailed("the DaemonSet has no hostNetwork: netdev uevents would not reach it")
    netdev = physical_netdev()
    if netdev is None:
        raise CheckFailed(f"no physical netdev in {NET_CLASS} to emit a uevent for")
    code = (HERE / "uevent_probe.py").read_text()
    probe = runner.start("multidp-check-uevent", image, pod, ["-c", code, netdev], entrypoint="python")
    try:
        wait_for("READY from the uevent probe", lambda: "READY" in probe.output(), 60, probe.output)
        deadline = time.monotonic() + 40
        while "RESULT " not in probe.output() and time.monotonic() < deadline:
            (NET_CLASS / netdev / "uevent").write_text("change")  # as root: the kernel sends a real uevent
            time.sleep(0.5)
        found = re.search(r"^RESULT (.*)$", probe.output(), re.M)
        if found is None:
            raise CheckFailed(f"the uevent probe said nothing\n{tail(probe.output())}")
        result = json.loads(found.group(1))
    finally:
        probe.stop(5)
    say(f"uevent: wrote 'change' to {NET_CLASS / netdev / 'uevent'}; in the container pyudev's kernel monitor got "
        f"{result['plain']!r}, the RDMA driver's uevent source flagged a rediscovery: {result['driver']}; "
        f"its log: {result['driver_log']}")
    if not result["plain"]:
        raise CheckFailed("no kernel uevent reached the container (pyudev, source='kernel')")
    if result["driver_error"] or not result["driver"]:
        raise CheckFailed(f"the RDMA driver's uevent source did not act on the uevent "
                          f"({result['driver_error'] or 'no rediscovery flagged'})")


def check_pyverbs(runner: Runner, verbs_image: str, image: str, pod: PodRun, say: Callable[[str], None]) -> None:
    """WITH_PYVERBS=1 imports pyverbs; and what the default image shows about opening host device nodes."""
    out = _run(runner, verbs_image, pod, ["-c", "import pyverbs.device; print(pyverbs.device.__name__)"],
               entrypoint="python")
    say(f"pyverbs: the WITH_PYVERBS=1 image imports {out.strip()}")
    probe = ("import os\nfor p in ('/host/dev/null', '/host/dev/kmsg', '/host/dev/fuse'):\n"
             "    try:\n        os.close(os.open(p, os.O_WRONLY)); print(p, 'opens')\n"
             "    except OSError as e: print(p, e.strerror)\n")
    seen = _run(runner, image, pod, ["-c", probe], entrypoint="python").strip().replace("\n", "; ")
    say(f"device nodes under /host/dev, opened for writing as the DaemonSet runs (not a check): {seen}")
