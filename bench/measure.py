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
from multidp.testing import KubeletStandIn, short_socket_dir

HERE = Path(__file__).resolve().parent
RESOURCE = "bench.multidp.io/dev"
WAIT_S = 60.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


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


def multidp_command(directory: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "multidp", "run", "--plugin-dir", str(directory), "--cdi-dir",
            str(directory / "cdi"), "--log-level", "warning", *extra]


def run_plugin(target: str, size: int, calls: int, restarts: int, site: Path) -> dict[str, Any]:
    """One resource of ``size`` devices served by ``target`` (minimal or multidp)."""
    directory = short_socket_dir("mdpb")
    kubelet = KubeletStandIn(directory).start()
    fifo = directory / "events.fifo"
    os.mkfifo(fifo)
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(HERE), os.environ.get("PYTHONPATH", "")]),
           "MULTIDP_BENCH_FIFO": str(fifo), "MULTIDP_BENCH_COUNT": str(size)}
    if target == "multidp":
        command = multidp_command(directory, "--drivers", "bench")
    else:
        command = [sys.executable, str(HERE / "minimal_plugin.py"), str(directory), str(size)]
    result: dict[str, Any] = {"target": target, "devices": size}
    started = time.monotonic()
    try:
        with plugin_process(command, env, directory) as proc:
            reg = kubelet.wait_registered(RESOURCE, timeout=WAIT_S)
            result["start_to_registered_ms"] = (reg.at - started) * 1e3
            kubelet.wait_devices(RESOURCE, lambda v: v.capacity == size, WAIT_S, f"{size} devices")
            result["first_list_ms"] = (kubelet.resources[RESOURCE].last_update_at - started) * 1e3
            result["rss_mb_idle"] = rss_mb(proc.pid)
            stub = kubelet.stub(RESOURCE)
            result["snapshot_bytes"] = snapshot_size(stub)
            request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["dev-0"])])
            result["allocate"] = timed(lambda: stub.Allocate(request, timeout=10), calls)
            result["floor"] = timed(lambda: stub.GetDevicePluginOptions(pb.Empty(), timeout=10), calls)
            if target == "multidp":
                result["health_propagation"] = health_propagation(kubelet, fifo, 20)
                result["reregistration"] = reregistration(kubelet, restarts)
            result["rss_mb_after"] = rss_mb(proc.pid)
            stopping = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            result["shutdown_ms"] = (time.monotonic() - stopping) * 1e3
            result["exit_code"] = proc.returncode
            result["sockets_left"] = sorted(p.name for p in directory.glob("multidp-*"))
    finally:
        kubelet.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
    return result


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
        count = sum(r.resource == resource for r in kubelet.registrations)
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
            kubelet.wait_for(lambda: any(r.startswith("rdma/") for r in kubelet.resources) and
                             any(r.startswith("fpga.") for r in kubelet.resources), WAIT_S, "RDMA and FPGA")
            time.sleep(1.0)  # let every driver settle
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


def many_resources(count: int, site: Path, env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Memory with ``count`` resources of 8 devices (bench driver), optionally in node-label mode."""
    directory = short_socket_dir("mdpm")
    kubelet = KubeletStandIn(directory).start()
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(HERE), os.environ.get("PYTHONPATH", "")]),
           "MULTIDP_BENCH_COUNT": "8", "MULTIDP_BENCH_RESOURCES": str(count), **(env_extra or {})}
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
