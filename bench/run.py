"""multidp benchmarks (not tests): one run, one machine, the same kubelet-like client for every plugin.

For a resource of 1, 1,000 and 10,000 devices it measures, for multidp (`multidp run`
in its own process, with bench_driver.py) and for a minimal grpcio plugin
(minimal_plugin.py) side by side:

- start → registered: process spawned → the kubelet stand-in receives Register;
- Allocate p50/p99 of one device (a Python grpcio client, as in the H100 recordings);
- ListAndWatch snapshot: size of the full list, and the time from a driver event
  (a byte written to its FIFO) to the kubelet receiving the list with the change;
- re-registration: new kubelet.sock → Register received, over several restarts;
- resident memory (VmRSS) after the calls; SIGTERM → exit.

Usage: python bench/run.py [--sizes 1,1000,10000] [--calls 3000] [--json bench/results/latest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from multidp.api import pb  # noqa: E402
from multidp.testing import KubeletStandIn, fake_distribution, short_socket_dir  # noqa: E402

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


def allocate_latency(kubelet: KubeletStandIn, calls: int) -> dict[str, float]:
    stub = kubelet.stub(RESOURCE)
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["dev-0"])])
    for _ in range(200):
        stub.Allocate(request, timeout=10)
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        stub.Allocate(request, timeout=10)
        samples.append((time.perf_counter() - start) * 1e6)
    return {"p50_us": percentile(samples, 50), "p99_us": percentile(samples, 99), "n": calls}


def snapshot_size(kubelet: KubeletStandIn) -> int:
    stream = kubelet.stub(RESOURCE).ListAndWatch(pb.Empty(), timeout=30)
    first = next(stream)
    stream.cancel()
    return int(first.ByteSize())


def health_propagation(kubelet: KubeletStandIn, fifo: Path, rounds: int) -> dict[str, float]:
    samples = []
    with open(fifo, "wb", buffering=0) as events:
        for _ in range(rounds):
            before = kubelet.resources[RESOURCE].devices["dev-0"][0]
            start = time.perf_counter()
            events.write(b"x")
            kubelet.wait_devices(RESOURCE, lambda v, was=before: v.devices["dev-0"][0] != was, WAIT_S,
                                 "health change")
            samples.append((time.perf_counter() - start) * 1e3)
    return {"p50_ms": statistics.median(samples), "max_ms": max(samples), "n": rounds}


def reregistration(kubelet: KubeletStandIn, restarts: int) -> dict[str, float]:
    samples = []
    for _ in range(restarts):
        count = sum(r.resource == RESOURCE for r in kubelet.registrations)
        kubelet.restart()
        reg = kubelet.wait_registered(RESOURCE, count + 1, WAIT_S)
        samples.append((reg.at - kubelet.restarts[-1]) * 1e3)
        kubelet.wait_devices(RESOURCE, lambda v: v.stream_open and v.capacity > 0, WAIT_S, "list after restart")
    return {"p50_ms": statistics.median(samples), "max_ms": max(samples), "n": restarts}


def measure(target: str, size: int, calls: int, restarts: int, site: Path) -> dict[str, Any]:
    directory = short_socket_dir("mdpb")
    kubelet = KubeletStandIn(directory).start()
    fifo = directory / "events.fifo"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(HERE), os.environ.get("PYTHONPATH", "")]),
           "MULTIDP_BENCH_FIFO": str(fifo), "MULTIDP_BENCH_COUNT": str(size)}
    if target == "multidp":
        cmd = [sys.executable, "-m", "multidp", "run", "--plugin-dir", str(directory), "--drivers", "bench",
               "--cdi-dir", str(directory / "cdi"), "--log-level", "warning"]
    else:
        cmd = [sys.executable, str(HERE / "minimal_plugin.py"), str(directory), str(size)]
    result: dict[str, Any] = {"target": target, "devices": size}
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        reg = kubelet.wait_registered(RESOURCE, timeout=WAIT_S)
        result["start_to_registered_ms"] = (reg.at - started) * 1e3
        kubelet.wait_devices(RESOURCE, lambda v: v.capacity == size, WAIT_S, f"{size} devices")
        result["first_list_ms"] = (kubelet.resources[RESOURCE].last_update_at - started) * 1e3
        result["rss_mb_idle"] = rss_mb(proc.pid)
        result["snapshot_bytes"] = snapshot_size(kubelet)
        result["allocate"] = allocate_latency(kubelet, calls)
        if target == "multidp":
            result["health_propagation"] = health_propagation(kubelet, fifo, 20)
            result["reregistration"] = reregistration(kubelet, restarts)
        result["rss_mb_after"] = rss_mb(proc.pid)
        stop_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        result["shutdown_ms"] = (time.monotonic() - stop_at) * 1e3
        result["exit_code"] = proc.returncode
        result["sockets_left"] = sorted(p.name for p in directory.iterdir() if p.name.startswith(("multidp-",
                                                                                                   "minimal")))
    finally:
        if proc.poll() is None:
            proc.kill()
        kubelet.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
    return result


def table(results: list[dict[str, Any]]) -> str:
    header = ["plugin", "devices", "start→reg ms", "Allocate p50/p99 µs", "p99 ratio", "LAW bytes",
              "health ms p50/max", "re-reg ms p50/max", "RSS MB"]
    rows = []
    baseline = {r["devices"]: r for r in results if r["target"] == "minimal"}
    for r in results:
        base = baseline.get(r["devices"])
        ratio = r["allocate"]["p99_us"] / base["allocate"]["p99_us"] if base else float("nan")
        hp, rr = r.get("health_propagation"), r.get("reregistration")
        rows.append([
            r["target"], str(r["devices"]), f"{r['start_to_registered_ms']:.0f}",
            f"{r['allocate']['p50_us']:.0f} / {r['allocate']['p99_us']:.0f}", f"{ratio:.2f}",
            str(r["snapshot_bytes"]), f"{hp['p50_ms']:.1f} / {hp['max_ms']:.1f}" if hp else "-",
            f"{rr['p50_ms']:.1f} / {rr['max_ms']:.1f}" if rr else "-", f"{r['rss_mb_after']:.1f}",
        ])
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,1000,10000")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--json", default=str(HERE / "results" / "latest.json"))
    args = parser.parse_args()
    site = short_socket_dir("mdpsite")
    fake_distribution(site, "multidp-bench", {"bench": "bench_driver"})
    results = []
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            for target in ("minimal", "multidp"):
                print(f"… {target}, {size} devices", file=sys.stderr, flush=True)
                results.append(measure(target, size, args.calls, args.restarts, site))
    finally:
        shutil.rmtree(site, ignore_errors=True)
    report = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
              "results": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(table(results))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
