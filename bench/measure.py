"""Measurements for bench/run.py: each starts a plugin process and drives it like the kubelet.

Every figure comes from the same Python grpcio client (the kubelet stand-in's
stubs), on this machine, in one run, so ratios between plugins are fair.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from multidp.api import pb
from multidp.testing import KubeletStandIn, percentile, short_socket_dir

HERE = Path(__file__).resolve().parent
RESOURCE = "bench.multidp.io/dev"
WAIT_S = 60.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(call: Any, calls: int, warmup: int = 200) -> dict[str, float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e6)
    return {"p50_us": percentile(samples, 50), "p99_us": percentile(samples, 99), "n": calls}


@contextmanager
def plugin_process(command: list[str], env: dict[str, str], kubelet_dir: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(command, env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def bench_env(site: Path, **variables: str) -> dict[str, str]:
    """The bench driver's site on the path (its entry point), and its MULTIDP_BENCH_* settings."""
    return {"PYTHONPATH": os.pathsep.join([str(site), str(HERE), os.environ.get("PYTHONPATH", "")]), **variables}


def plugin_command(target: str, directory: Path, devices: int) -> list[str]:
    """How to start ``target``: multidp with the bench driver, or the minimal plugin."""
    if target == "multidp":
        return multidp_command(directory, "--drivers", "bench")
    if target == "minimal-aio":  # the same plugin on grpc.aio: the shape of multidp's front-end
        return [sys.executable, str(HERE / "minimal_aio_plugin.py"), str(directory), str(devices)]
    return [sys.executable, str(HERE / "minimal_plugin.py"), str(directory), str(devices)]


def multidp_command(directory: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "multidp", "run", "--plugin-dir", str(directory), "--cdi-dir",
            str(directory / "cdi"), "--log-level", "warning", *extra]


class Running:
    """One plugin process serving one resource to its own kubelet stand-in."""

    def __init__(self, target: str, size: int, site: Path) -> None:
        self.target, self.size = target, size
        self.directory = short_socket_dir("mdpb")
        self.kubelet = KubeletStandIn(self.directory).start()
        self.fifo = self.directory / "events.fifo"
        os.mkfifo(self.fifo)
        env = bench_env(site, MULTIDP_BENCH_FIFO=str(self.fifo), MULTIDP_BENCH_COUNT=str(size))
        command = plugin_command(target, self.directory, size)
        self.result: dict[str, Any] = {"target": target, "devices": size}
        started = time.monotonic()
        self.proc = subprocess.Popen(command, env={**os.environ, **env}, stderr=subprocess.DEVNULL)
        try:
            self._ready(started)
        except BaseException:
            self.stop()
            raise

    def _ready(self, started: float) -> None:
        size = self.size
        reg = self.kubelet.wait_registered(RESOURCE, timeout=WAIT_S)
        self.result["start_to_registered_ms"] = (reg.at - started) * 1e3
        self.kubelet.wait_devices(RESOURCE, lambda v: v.capacity == size, WAIT_S, f"{size} devices")
        self.result["first_list_ms"] = (self.kubelet.resources[RESOURCE].last_update_at - started) * 1e3
        self.result["rss_mb_idle"] = rss_mb(self.proc.pid)
        self.stub = self.kubelet.stub(RESOURCE)
        self.result["snapshot_bytes"] = snapshot_size(self.stub)

    def stop(self) -> None:
        try:
            self.result["rss_mb_after"] = rss_mb(self.proc.pid)
            stopping = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
            self.result["shutdown_ms"] = (time.monotonic() - stopping) * 1e3
            self.result["exit_code"] = self.proc.returncode
            self.result["sockets_left"] = sorted(p.name for p in self.directory.glob("multidp-*"))
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.kubelet.shutdown()
            shutil.rmtree(self.directory, ignore_errors=True)


def interleaved(plugins: list[Running], calls: int) -> None:
    """Allocate and the floor for every plugin, one call each in turn, so that whatever else the
    machine does at a given moment weighs on all of them alike."""
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["dev-0"])])
    kinds = {"allocate": lambda p: p.stub.Allocate(request, timeout=10),
             "floor": lambda p: p.stub.GetDevicePluginOptions(pb.Empty(), timeout=10)}
    for kind, call in kinds.items():
        samples: dict[str, list[float]] = {p.target: [] for p in plugins}
        for n in range(200 + calls):
            for plugin in plugins:
                start = time.perf_counter()
                call(plugin)
                if n >= 200:  # after the warm-up
                    samples[plugin.target].append((time.perf_counter() - start) * 1e6)
        for plugin in plugins:
            values = samples[plugin.target]
            plugin.result[kind] = {"p50_us": percentile(values, 50), "p99_us": percentile(values, 99),
                                   "n": len(values)}


def run_pair(size: int, calls: int, restarts: int, site: Path) -> list[dict[str, Any]]:
    """The minimal plugins (sync and grpc.aio) and multidp, each serving one resource of ``size`` devices,
    side by side."""
    plugins: list[Running] = []
    try:
        for target in ("minimal", "minimal-aio", "multidp"):
            plugins.append(Running(target, size, site))
        interleaved(plugins, calls)
        multidp = plugins[-1]
        multidp.result["health_propagation"] = health_propagation(multidp.kubelet, multidp.fifo, 20)
        multidp.result["reregistration"] = reregistration(multidp.kubelet, restarts)
    finally:
        for plugin in plugins:
            plugin.stop()
    return [p.result for p in plugins]


def start_times(site: Path, runs: int) -> dict[str, Any]:
    """start → registered over ``runs`` spawns of each plugin, taken in turns (one spawn is noisy)."""
    env = bench_env(site, MULTIDP_BENCH_COUNT="1")
    samples: dict[str, list[float]] = {"minimal": [], "multidp": []}
    for _ in range(runs):
        for target in samples:
            directory = short_socket_dir("mdpt")
            kubelet = KubeletStandIn(directory).start()
            command = plugin_command(target, directory, 1)
            started = time.monotonic()
            try:
                with plugin_process(command, env, directory):
                    reg = kubelet.wait_registered(RESOURCE, timeout=WAIT_S)
                    samples[target].append((reg.at - started) * 1e3)
            finally:
                kubelet.shutdown()
                shutil.rmtree(directory, ignore_errors=True)
    return {t: {"median_ms": statistics.median(v), "min_ms": min(v), "n": len(v)} for t, v in samples.items()}


def snapshot_size(stub: Any) -> int:
    stream = stub.ListAndWatch(pb.Empty(), timeout=30)
    first = next(stream)
    stream.cancel()
    return int(first.ByteSize())


def health_propagation(kubelet: KubeletStandIn, fifo: Path, rounds: int) -> dict[str, float]:
    """A byte in the driver's event FIFO → the kubelet holds the list with the flipped device."""
    samples = []
    with open(fifo, "wb", buffering=0) as events:
        for _ in range(rounds):
            before = kubelet.resources[RESOURCE].devices["dev-0"][0]
            start = time.monotonic()
            events.write(b"x")
            view = kubelet.wait_devices(RESOURCE, lambda v, was=before: v.devices["dev-0"][0] != was, WAIT_S,
                                        "health change")
            # Received when the message arrived, not when the stand-in finished indexing it.
            samples.append((view.last_update_at - start) * 1e3)
    return {"p50_ms": statistics.median(samples), "max_ms": max(samples), "n": rounds}


def reregistration(kubelet: KubeletStandIn, restarts: int, resource: str = RESOURCE) -> dict[str, float]:
    """New kubelet.sock served → Register received, over ``restarts`` kubelet restarts."""
    samples = []
    for _ in range(restarts):
        count = kubelet.registration_count(resource)
        kubelet.restart()
        reg = kubelet.wait_registered(resource, count + 1, WAIT_S)
        samples.append((reg.at - kubelet.restarts[-1]) * 1e3)
        kubelet.wait_devices(resource, lambda v: v.stream_open and v.capacity > 0, WAIT_S, "list after restart")
    return {"p50_ms": statistics.median(samples), "max_ms": max(samples), "n": restarts}


def all_drivers(calls: int) -> dict[str, Any]:
    """`multidp run --simulate` with every installed driver: start, memory, NVLink preferred allocation."""
    directory = short_socket_dir("mdpa")
    kubelet = KubeletStandIn(directory).start()
    result: dict[str, Any] = {}
    started = time.monotonic()
    try:
        with plugin_process(multidp_command(directory, "--simulate"), {}, directory) as proc:
            gpu = kubelet.wait_devices("nvidia.com/gpu", lambda v: v.capacity == 8, WAIT_S, "8 simulated GPUs")
            kubelet.wait_for(lambda: len(kubelet.resources) >= 6, WAIT_S, "every simulated resource")
            count = 0
            while count != len(kubelet.resources):  # until no resource came for a second: every driver settled
                count = len(kubelet.resources)
                time.sleep(1.0)
            result["resources"] = sorted(kubelet.resources)
            result["start_to_all_registered_ms"] = (max(r.at for r in kubelet.registrations) - started) * 1e3
            result["rss_mb"] = rss_mb(proc.pid)
            stub = kubelet.stub("nvidia.com/gpu")
            gpus = sorted(gpu.devices)
            for size in (2, 4):
                request = pb.PreferredAllocationRequest(container_requests=[
                    pb.ContainerPreferredAllocationRequest(available_deviceIDs=gpus, allocation_size=size)])
                result[f"preferred_{size}_of_8"] = timed(lambda r=request: stub.GetPreferredAllocation(r, timeout=10),
                                                         calls // 3)
            result["preferred_2_of_8_answer"] = list(stub.GetPreferredAllocation(pb.PreferredAllocationRequest(
                container_requests=[pb.ContainerPreferredAllocationRequest(available_deviceIDs=gpus,
                                                                           allocation_size=2)])).container_responses[0].deviceIDs)
    finally:
        kubelet.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
    return result


def drivers_without_hardware() -> dict[str, Any]:
    """Every installed driver loaded on this machine's real /sys and /dev (no simulation modules)."""
    directory = short_socket_dir("mdpn")
    kubelet = KubeletStandIn(directory).start()
    try:
        with plugin_process(multidp_command(directory), {}, directory) as proc:
            time.sleep(3.0)  # every driver created and scanned (nothing to register without hardware)
            return {"rss_mb": rss_mb(proc.pid), "threads": len(os.listdir(f"/proc/{proc.pid}/task"))}
    finally:
        kubelet.shutdown()
        shutil.rmtree(directory, ignore_errors=True)


def reregistration_many(site: Path, count: int, restarts: int) -> dict[str, Any]:
    """Kubelet restarts with ``count`` resources: when the first and the last registered again."""
    directory = short_socket_dir("mdpg")
    kubelet = KubeletStandIn(directory).start()
    env = bench_env(site, MULTIDP_BENCH_COUNT="1", MULTIDP_BENCH_RESOURCES=str(count))
    first: list[float] = []
    last: list[float] = []
    try:
        with plugin_process(multidp_command(directory, "--drivers", "bench"), env, directory):
            kubelet.wait_for(lambda: len(kubelet.resources) == count and
                             all(v.capacity for v in kubelet.resources.values()), WAIT_S, f"{count} resources")
            for _ in range(restarts):
                counts = {r: kubelet.registration_count(r) for r in kubelet.resources}
                kubelet.restart()
                times = [(kubelet.wait_registered(r, n + 1, WAIT_S).at - kubelet.restarts[-1]) * 1e3
                         for r, n in counts.items()]
                first.append(min(times))
                last.append(max(times))
                time.sleep(0.3)
    finally:
        kubelet.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
    return {"resources": count, "first_p50_ms": statistics.median(first), "last_p50_ms": statistics.median(last),
            "last_max_ms": max(last), "n": restarts}


def many_resources(count: int, site: Path, env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Memory with ``count`` resources of 8 devices (bench driver), optionally in node-label mode."""
    directory = short_socket_dir("mdpm")
    kubelet = KubeletStandIn(directory).start()
    env = bench_env(site, MULTIDP_BENCH_COUNT="8", MULTIDP_BENCH_RESOURCES=str(count), **(env_extra or {}))
    try:
        with plugin_process(multidp_command(directory, "--drivers", "bench"), env, directory) as proc:
            kubelet.wait_for(lambda: len(kubelet.resources) == count and
                             all(v.capacity == 8 for v in kubelet.resources.values()), WAIT_S, f"{count} resources")
            time.sleep(0.5)
            threads = len(os.listdir(f"/proc/{proc.pid}/task"))
            return {"resources": count, "rss_mb": rss_mb(proc.pid), "threads": threads}
    finally:
        kubelet.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
