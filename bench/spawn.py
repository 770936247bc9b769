"""Spawning what the idle, start-up and import figures compare: multidp with the real drivers on their
simulated trees, and the minimal plugins serving the same number of resources, each to its own kubelet
stand-in in its own directory.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from measure import HERE, WAIT_S, multidp_command

from multidp.testing import KubeletStandIn, short_socket_dir

QUIET_S = 3.0  # no new resource for this long: a driver has registered all it has


def _memory_dir() -> str | None:
    """A tmpfs directory, if this machine has one: where the simulated trees go."""
    try:
        with open("/proc/mounts", encoding="ascii", errors="replace") as mounts:
            found = [f[1] for f in (line.split() for line in mounts) if len(f) > 2 and f[2] == "tmpfs"]
    except OSError:
        return None
    return next((d for d in ("/dev/shm", "/run/shm", "/tmp") if d in found and os.access(d, os.W_OK)), None)


# A node's /sys is memory-backed; simulated trees written to a disk instead pay file-system writes (50-300 ms
# from one spawn to the next on the development VM) that no node pays. MULTIDP_BENCH_SIM_DIR overrides.
SIM_DIR = os.environ.get("MULTIDP_BENCH_SIM_DIR") or _memory_dir()


def sim_dir_note() -> str:
    where = SIM_DIR or "the default temporary directory"
    return f"written under {where}" + (", a tmpfs" if SIM_DIR and SIM_DIR == _memory_dir() else "")


@dataclass(frozen=True)
class Target:
    """Something to spawn: ``kind`` is "multidp" (``drivers`` a --drivers value; on simulated hardware
    unless ``simulate`` is false), "minimal" (the sync baseline, minimal_plugin.py) or "aio"
    (minimal_aio_plugin.py), the last two serving ``resources``."""

    name: str
    kind: str
    drivers: str = ""
    resources: int = 0
    simulate: bool = True

    def command(self, directory: Path) -> list[str]:
        if self.kind == "multidp":
            return multidp_command(directory, *(["--simulate"] if self.simulate else []), "--drivers", self.drivers)
        script = "minimal_plugin.py" if self.kind == "minimal" else "minimal_aio_plugin.py"
        return [sys.executable, str(HERE / script), str(directory), "1", str(self.resources)]


def minimal(resources: int, kind: str = "minimal") -> Target:
    return Target(f"{'minimal sync' if kind == 'minimal' else 'minimal aio'} ×{resources}", kind, resources=resources)


def driver_targets() -> list[Target]:
    """Every installed driver alone (found as the host finds them: entry points), then all together."""
    preferred = ["nvidia", "rdma", "fpga"]
    names = sorted({ep.name for ep in importlib.metadata.entry_points(group="multidp")},
                   key=lambda n: (preferred.index(n) if n in preferred else len(preferred), n))
    targets = [Target(f"multidp {n}", "multidp", n) for n in names]
    if len(names) > 1:
        targets.append(Target("multidp all", "multidp", ",".join(names)))
    return targets


class Spawned:
    """One target's process serving its own kubelet stand-in; ``started`` is time.monotonic() at spawn."""

    def __init__(self, target: Target, stderr: IO[Any] | int = subprocess.DEVNULL,
                 python_flags: tuple[str, ...] = ()) -> None:
        self.target = target
        # The plugin dir one level down: multidp watches its parent for the dir's removal, and a parent
        # of its own (not /tmp, where every other spawn and test writes) keeps those events out of idle.
        self._scratch = short_socket_dir("mdps")
        self.directory = self._scratch / "p"
        self.directory.mkdir()
        self.kubelet = KubeletStandIn(self.directory).start()
        command = target.command(self.directory)
        command[1:1] = python_flags
        env = dict(os.environ, TMPDIR=SIM_DIR) if target.kind == "multidp" and target.simulate and SIM_DIR else None
        self.started = time.monotonic()
        try:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                         env=env)
        except BaseException:
            self.kubelet.shutdown()
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise

    def listed(self) -> int:
        """Resources registered whose first ListAndWatch message has arrived."""
        return sum(v.updates > 0 for v in list(self.kubelet.resources.values()))

    def wait_listed(self, expected: int | None = None) -> int:
        """Wait until ``expected`` resources are listed, or, not knowing how many, until at least one is
        and no other has registered for QUIET_S; returns how many are listed."""
        deadline = time.monotonic() + WAIT_S
        quiet_since, count = time.monotonic(), -1
        while True:
            listed, registered = self.listed(), len(self.kubelet.resources)
            if expected is not None and listed >= expected:
                return listed
            if registered != count:
                quiet_since, count = time.monotonic(), registered
            elif expected is None and listed == registered > 0 and time.monotonic() - quiet_since >= QUIET_S:
                return listed
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.target.name} exited ({self.proc.returncode}) before its resources "
                                   f"were listed: {sorted(self.kubelet.resources)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.target.name}: {listed} resources listed after {WAIT_S:.0f} s, "
                                   f"expected {expected if expected is not None else 'a quiet moment'}")
            time.sleep(0.02)

    def registered_ms(self) -> tuple[float, float]:
        """Spawn → the first Register arrived, and → the last (the stand-in stamps each on arrival)."""
        times = [r.at for r in self.kubelet.registrations]
        return (min(times) - self.started) * 1e3, (max(times) - self.started) * 1e3

    def close(self) -> None:
        try:
            terminate(self.proc)
        finally:
            self.kubelet.shutdown()
            shutil.rmtree(self._scratch, ignore_errors=True)


def terminate(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM a spawned plugin as the kubelet's node would stop it; kill it after 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def resource_counts(targets: list[Target]) -> dict[str, int]:
    """How many resources each multidp target serves on its simulated tree, one spawn each (which also
    warms the page cache for the timed spawns after it)."""
    counts = {}
    for target in targets:
        spawned = Spawned(target)
        try:
            counts[target.name] = spawned.wait_listed()
        finally:
            spawned.close()
    return counts
