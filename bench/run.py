"""multidp benchmarks (not tests): one run, one machine, the same kubelet-like client for every plugin.

Measured side by side with a minimal grpcio plugin (minimal_plugin.py):
- for a resource of 1, 1,000 and 10,000 devices: start → registered, Allocate p50/p99, the floor (a
  no-op unary RPC, GetDevicePluginOptions, on the same socket with the same client) and Allocate's
  ratio to it, the ListAndWatch snapshot's size, health propagation (a driver event → the kubelet holds
  the new list), re-registration after kubelet restarts, resident memory, shutdown;
- every installed driver on simulated hardware: start → all registered, resident memory, and
  GetPreferredAllocation on the simulated 8-GPU NVLink machine;
- resident memory with 50 resources, and with node-label mode on (lightkube against a local API server);
- idle: CPU per minute, threads and wake-ups of multidp with each real driver and all of them, beside
  the minimal plugin serving as many resources (idle.py);
- start → registered with each real driver on its simulated tree (startup.py), and import time per
  module under -X importtime (imports.py);
- DRA (dra.py): NodePrepareResources / NodeUnprepareResources p50/p99 for one device, beside Allocate on
  the same device through the device plugin, and resident memory in both modes; the ResourceSlices
  (draslices.py): a health change → its taint in the API and back, and a 1,000-device pool published.

Each figure is printed with the bar it is held to (docs/design.md, "Performance bars"). Without a
section flag every section runs. Usage:
  python bench/run.py [--serving] [--idle] [--start] [--imports] [--dra] [--sizes 1,1000,10000] [--calls 3000]
                      [--restarts 10] [--starts 7] [--idle-seconds 30] [--import-spawns 3] [--dra-calls 300]
                      [--dra-flips 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import dra  # noqa: E402
import draslices  # noqa: E402
import idle  # noqa: E402
import imports  # noqa: E402
import startup  # noqa: E402
from measure import (  # noqa: E402
    HERE,
    all_drivers,
    drivers_without_hardware,
    many_resources,
    reregistration_many,
    run_pair,
    start_times,
)
from spawn import driver_targets, resource_counts  # noqa: E402

from multidp.testing import FakeApiServer, fake_distribution, short_socket_dir  # noqa: E402

SECTIONS = ("serving", "idle", "start", "imports", "dra")


def render(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])


def plugin_table(results: list[dict[str, Any]]) -> str:
    base = {r["devices"]: r for r in results if r["target"] == "minimal"}
    same_shape = {r["devices"]: r for r in results if r["target"] == "minimal-aio"}
    rows = []
    for r in results:
        minimal = base[r["devices"]]
        aio = same_shape.get(r["devices"], minimal)
        hp, rr = r.get("health_propagation"), r.get("reregistration")
        rows.append([
            r["target"], str(r["devices"]), f"{r['start_to_registered_ms']:.0f}",
            f"{r['start_to_registered_ms'] / minimal['start_to_registered_ms']:.2f}",
            f"{r['allocate']['p50_us']:.0f} / {r['allocate']['p99_us']:.0f}",
            f"{r['allocate']['p99_us'] / minimal['allocate']['p99_us']:.2f}",
            f"{r['allocate']['p99_us'] / aio['allocate']['p99_us']:.2f}",
            f"{r['floor']['p50_us']:.0f} / {r['floor']['p99_us']:.0f}",
            f"{r['allocate']['p50_us'] / r['floor']['p50_us']:.2f}",
            str(r["snapshot_bytes"]), f"{r['first_list_ms']:.0f}",
            f"{hp['p50_ms']:.1f} / {hp['max_ms']:.1f}" if hp else "-",
            f"{rr['p50_ms']:.1f} / {rr['max_ms']:.1f}" if rr else "-",
            f"{r['rss_mb_after']:.1f}", f"{r['rss_mb_after'] / minimal['rss_mb_after']:.2f}",
        ])
    header = ["plugin", "devices", "start→reg ms", "×min (≤2)", "Allocate p50/p99 µs", "p99 ×min sync",
              "p99 ×min aio (≤1.2)",
              "floor p50/p99 µs", "p50 ×floor", "list bytes", "first list ms", "health ms p50/max (≤50)",
              "re-reg ms p50/max (≤10)", "RSS MB", "×min (≤1.3)"]
    return render(rows, header)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serving", action="store_true",
                        help="the bench-driver figures: Allocate, health, re-registration, memory, start")
    parser.add_argument("--idle", action="store_true", help="idle CPU, threads, wake-ups")
    parser.add_argument("--start", action="store_true", help="start → registered with the real drivers")
    parser.add_argument("--imports", action="store_true", help="import time per module (-X importtime)")
    parser.add_argument("--dra", action="store_true",
                        help="DRA: Prepare / Unprepare beside Allocate on the same device, and memory in both modes")
    parser.add_argument("--sizes", default="1,1000,10000")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--starts", type=int, default=7, help="spawns of each plugin for start → registered")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="the idle window (60 for a steadier figure)")
    parser.add_argument("--import-spawns", type=int, default=3, help="spawns of each target under -X importtime")
    parser.add_argument("--dra-calls", type=int, default=300, help="Prepare / Unprepare / Allocate calls of --dra")
    parser.add_argument("--dra-flips", type=int, default=10,
                        help="health flips each way of --dra's ResourceSlice figures")
    parser.add_argument("--json", default=str(HERE / "results" / "latest.json"))
    args = parser.parse_args()
    chosen = [s for s in SECTIONS if getattr(args, s)] or list(SECTIONS)
    compile_bytecode()
    report: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                          "platform": platform.platform()}, "sections": chosen}
    if "serving" in chosen:
        serving(args, report)
    counts: dict[str, int] | None = None
    if "idle" in chosen:
        print("… idle: every target spawned side by side", file=sys.stderr, flush=True)
        report["idle"] = result = idle.idle(args.idle_seconds)
        counts = {r["target"]: r["resources"] for r in result["rows"] if r["kind"] == "multidp"}
        print("\n" + render(*reversed(idle.table(result))) + "\n" + idle.summary(result))
    if ("start" in chosen or "imports" in chosen) and counts is None:
        print("… resources of each driver (one untimed spawn each)", file=sys.stderr, flush=True)
        counts = resource_counts(driver_targets())
    if "start" in chosen:
        report["start_real_drivers"] = result = startup.start_real(args.starts, counts)
        print("\n" + render(*reversed(startup.table(result))) + "\n" + startup.summary(result))
    if "imports" in chosen:
        assert counts is not None
        report["imports"] = result = imports.import_times(args.import_spawns, counts)
        print("\n" + render(*reversed(imports.table(result))) + "\n" + imports.top_modules(result))
    if "dra" in chosen:
        print("… DRA: a device-plugin host and a DRA host, side by side", file=sys.stderr, flush=True)
        report["dra"] = result = dra.measure(args.dra_calls)
        header, rows = dra.table(result)
        print("\n" + render(rows, header) + "\n" + dra.summary(result))
        print("… DRA: ResourceSlices (a health change → its taint; a 1,000-device pool)", file=sys.stderr, flush=True)
        result["slices"] = published = draslices.measure(args.dra_flips)
        header, rows = draslices.table(published)
        print("\n" + render(rows, header) + "\n" + draslices.summary(published))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {args.json}")
    return 0


def serving(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """The figures with the bench driver (bench_driver.py) against the one-resource minimal plugin."""
    site = short_socket_dir("mdpsite")
    fake_distribution(site, "multidp-bench", {"bench": "bench_driver"})
    try:
        plugins = []
        for size in [int(s) for s in args.sizes.split(",")]:
            print(f"… {size} devices", file=sys.stderr, flush=True)
            plugins += run_pair(size, args.calls, args.restarts, site)
        report["plugins"] = plugins
        print(plugin_table(plugins))
        print("… start-up, several spawns", file=sys.stderr, flush=True)
        report["start"] = start = start_times(site, args.starts)
        ratio = start["multidp"]["median_ms"] / start["minimal"]["median_ms"]
        print(f"\nstart → registered, median of {args.starts} spawns each: minimal "
              f"{start['minimal']['median_ms']:.0f} ms, multidp {start['multidp']['median_ms']:.0f} ms "
              f"(×{ratio:.2f}; bar ≤2)")
        if all(importlib.util.find_spec(m) for m in ("multidp_nvidia", "multidp_rdma", "multidp_fpga")):
            print("… all drivers, simulated", file=sys.stderr, flush=True)
            report["all_drivers"] = drivers = all_drivers(args.calls)
            minimal_rss = next(r["rss_mb_after"] for r in plugins if r["target"] == "minimal")
            print(f"\nall three drivers (simulated, {len(drivers['resources'])} resources): start → all registered "
                  f"{drivers['start_to_all_registered_ms']:.0f} ms; RSS {drivers['rss_mb']:.1f} MB "
                  f"(×{drivers['rss_mb'] / minimal_rss:.2f} the minimal plugin; bar ≤1.3)")
            report["drivers_without_hardware"] = bare = drivers_without_hardware()
            print(f"all three drivers loaded on this machine's own /sys and /dev (no devices, no simulation): "
                  f"RSS {bare['rss_mb']:.1f} MB (×{bare['rss_mb'] / minimal_rss:.2f})")
            for size in (2, 4):
                p = drivers[f"preferred_{size}_of_8"]
                print(f"GetPreferredAllocation {size} of 8 NVLink GPUs: p50 {p['p50_us'] / 1000:.2f} ms, "
                      f"p99 {p['p99_us'] / 1000:.2f} ms (bar < 5 ms)")
        report["reregistration_6"] = six = reregistration_many(site, 6, args.restarts)
        print(f"re-registration with 6 resources: the first {six['first_p50_ms']:.1f} ms, the last "
              f"{six['last_p50_ms']:.1f} ms (median), {six['last_max_ms']:.1f} ms worst (bar ≤10)")
        print("… 50 resources; node-label mode", file=sys.stderr, flush=True)
        report["fifty_resources"] = fifty = many_resources(50, site)
        print(f"50 resources × 8 devices: RSS {fifty['rss_mb']:.1f} MB, {fifty['threads']} threads")
        if importlib.util.find_spec("lightkube") is None:  # e.g. a GPU machine given only the core wheels
            report["label_mode"] = {"skipped": "lightkube is not installed"}
            print("node-label mode: skipped (lightkube, imported only in node-label mode, is not installed here)")
        else:
            report["label_mode"] = lm = label_mode(site)
            print(f"node-label mode (lightkube watching a local API server): RSS {lm['rss_mb']:.1f} MB "
                  f"vs {lm['rss_mb_without']:.1f} MB without (+{lm['rss_mb'] - lm['rss_mb_without']:.1f} MB)")
    finally:
        shutil.rmtree(site, ignore_errors=True)


def compile_bytecode() -> None:
    """Byte-compile the host, the drivers and the bench driver first, as an installed package is:
    an editable install under PYTHONDONTWRITEBYTECODE (set on this kind of machine) would otherwise
    compile every multidp module at every start, and start-up would measure the compiler."""
    import compileall

    root = HERE.parent
    for folder in [root / "src", *sorted(root.glob("drivers/*/src")), HERE]:
        compileall.compile_dir(str(folder), quiet=1)


def label_mode(site: Path) -> dict[str, Any]:
    api = FakeApiServer("bench-node")
    config_dir = short_socket_dir("mdpk")
    try:
        env = {"NODE_NAME": "bench-node", "KUBECONFIG": str(api.kubeconfig(config_dir))}
        with_labels = many_resources(1, site, env)
        without = many_resources(1, site)
        assert any("watch=true" in r for r in api.requests), "the watch never reached the API server"
        return {"rss_mb": with_labels["rss_mb"], "rss_mb_without": without["rss_mb"]}
    finally:
        api.close()
        shutil.rmtree(config_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
