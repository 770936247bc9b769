"""Idle cost: CPU per minute, threads and wake-ups of each plugin's process tree while nothing happens.

Every target runs at once, each registered with its own kubelet stand-in, and is read over the same
window, so the ratios compare like with like: multidp with each real driver alone and with all of them
on their simulated trees, beside the minimal sync plugin serving the same number of resources (the bar),
the one-resource minimal plugin (the moonshot) and the same shapes on grpc.aio (informative).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from proctree import per_minute, read_tree
from spawn import Spawned, driver_targets, minimal

BAR = 2.0  # all drivers ≤ 2× the minimal sync plugin serving as many resources
MOONSHOT = 1.0  # ≤ the one-resource minimal plugin


def idle(seconds: float, settle_s: float = 5.0) -> dict[str, Any]:
    """Spawn everything, wait until every resource is listed, let it settle, then read one window."""
    running: list[Spawned] = []
    try:
        drivers = driver_targets()
        for target in drivers:
            running.append(Spawned(target))
        counts = {s.target.name: s.wait_listed() for s in running}
        sizes = sorted({1, *counts.values()})
        baselines = [minimal(n, kind) for kind in ("minimal", "aio") for n in sizes]
        for target in baselines:
            running.append(Spawned(target))
        for spawned in running[len(drivers):]:
            spawned.wait_listed(spawned.target.resources)
        time.sleep(settle_s)
        print(f"… idle window of {seconds:.0f} s, {len(running)} processes side by side", file=sys.stderr,
              flush=True)
        before = {s.target.name: read_tree(s.proc.pid, time.monotonic()) for s in running}
        time.sleep(seconds)
        after = {s.target.name: read_tree(s.proc.pid, time.monotonic()) for s in running}
        rows = []
        for spawned in running:
            name = spawned.target.name
            if spawned.proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({spawned.proc.returncode}) during the idle window")
            row = {"target": name, "kind": spawned.target.kind, "resources": spawned.target.resources or counts[name],
                   "resources_at_end": spawned.listed(), **per_minute(before[name], after[name])}
            rows.append(row)
    finally:
        for spawned in running:
            spawned.close()
    return {"window_s": seconds, "settle_s": settle_s, "rows": rows}


def baseline(result: dict[str, Any], kind: str, resources: int) -> dict[str, Any]:
    return next(r for r in result["rows"] if r["kind"] == kind and r["resources"] == resources)


def verdicts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each multidp row's ratios: to the minimal sync plugin with as many resources, and to one resource."""
    found = []
    one = baseline(result, "minimal", 1)["cpu_ms_per_min"]
    for row in result["rows"]:
        if row["kind"] == "multidp":
            same = baseline(result, "minimal", row["resources"])["cpu_ms_per_min"]
            ratio, to_one = row["cpu_ms_per_min"] / same, row["cpu_ms_per_min"] / one
            found.append({"target": row["target"], "x_minimal_same": ratio, "x_minimal_one": to_one,
                          "bar_met": ratio <= BAR, "moonshot_met": to_one <= MOONSHOT})
    return found


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    ratios = {v["target"]: v for v in verdicts(result)}
    rows = []
    for row in result["rows"]:
        v = ratios.get(row["target"])
        rows.append([
            row["target"], str(row["resources"]), f"{row['cpu_ms_per_min']:.0f}", f"{row['core_percent']:.2f}",
            str(row["threads"]), str(row["processes"]), f"{row['wakeups_per_min']:.0f}",
            f"{v['x_minimal_same']:.2f}" if v else "-", f"{v['x_minimal_one']:.2f}" if v else "-",
            ("met" if v["bar_met"] else "MISSED") + (", moonshot met" if v["moonshot_met"] else "") if v else "-",
        ])
    header = ["idle", "resources", "CPU ms/min", "% core", "threads", "procs", "wake-ups/min",
              f"×sync same N (≤{BAR:g})", f"×sync 1 res (moonshot ≤{MOONSHOT:g})", "bar"]
    return header, rows


def summary(result: dict[str, Any]) -> str:
    found = [v for v in verdicts(result) if v["target"] == "multidp all"]
    if not found:
        return "idle CPU bar: needs every driver installed (no 'multidp all' row)"
    v = found[0]
    return (f"idle CPU, all drivers, over {result['window_s']:.0f} s: ×{v['x_minimal_same']:.2f} the minimal sync "
            f"plugin serving as many resources (bar ≤{BAR:g}: {'met' if v['bar_met'] else 'MISSED'}); "
            f"×{v['x_minimal_one']:.2f} the one-resource one (moonshot ≤{MOONSHOT:g}: "
            f"{'met' if v['moonshot_met'] else 'missed'})")

