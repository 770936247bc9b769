"""Start → registered with the real drivers on their simulated trees, beside the minimal plugin.

Each round spawns every target once, in turns: multidp with each driver alone and with all of them, the
minimal sync plugin serving the same number of resources (the bar), and the same on grpc.aio
(informative). A spawn counts from Popen to the stand-in receiving the first Register and the last one
(every resource of the target); the figure is the median over the rounds.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from spawn import Spawned, Target, driver_targets, minimal, resource_counts, sim_dir_note

BAR = 2.0  # the last resource registered ≤ 2× the minimal sync plugin serving as many
MOONSHOT = 1.2


def start_real(rounds: int, counts: dict[str, int] | None = None) -> dict[str, Any]:
    """``counts``: each multidp target's resources, if an earlier spawn found them (else a first, untimed
    spawn of each finds them and warms the page cache)."""
    drivers = driver_targets()
    if counts is None or any(t.name not in counts for t in drivers):
        print("… resources of each driver (one untimed spawn each)", file=sys.stderr, flush=True)
        counts = resource_counts(drivers)
    order: list[tuple[Target, int]] = []
    for size in sorted({1, *counts.values()}):
        order += [(minimal(size), size), (minimal(size, "aio"), size)]
        order += [(t, size) for t in drivers if counts[t.name] == size]
    samples: dict[str, dict[str, list[float]]] = {t.name: {"first": [], "last": []} for t, _ in order}
    for n in range(rounds):
        print(f"… start-up round {n + 1} of {rounds}", file=sys.stderr, flush=True)
        for target, size in order:
            spawned = Spawned(target)
            try:
                spawned.wait_listed(size)
                first, last = spawned.registered_ms()
            finally:
                spawned.close()
            samples[target.name]["first"].append(first)
            samples[target.name]["last"].append(last)
    rows = []
    for target, size in order:
        got = samples[target.name]
        rows.append({"target": target.name, "kind": target.kind, "resources": size, "n": rounds,
                     "first_median_ms": statistics.median(got["first"]),
                     "last_median_ms": statistics.median(got["last"]),
                     "last_min_ms": min(got["last"]), "last_max_ms": max(got["last"]),
                     "first_ms": got["first"], "last_ms": got["last"]})
    return {"rounds": rounds, "rows": rows, "simulation": sim_dir_note()}


def verdicts(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each multidp row against the minimal sync plugin with as many resources: first and last Register."""
    found = {}
    for row in result["rows"]:
        if row["kind"] == "multidp":
            base = next(r for r in result["rows"] if r["kind"] == "minimal" and r["resources"] == row["resources"])
            ratio = row["last_median_ms"] / base["last_median_ms"]
            found[row["target"]] = {"x_first": row["first_median_ms"] / base["first_median_ms"], "x_last": ratio,
                                    "bar_met": ratio <= BAR, "moonshot_met": ratio <= MOONSHOT}
    return found


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    ratios = verdicts(result)
    rows = []
    for row in result["rows"]:
        v = ratios.get(row["target"])
        rows.append([
            row["target"], str(row["resources"]), f"{row['first_median_ms']:.0f}", f"{row['last_median_ms']:.0f}",
            f"{row['last_min_ms']:.0f}–{row['last_max_ms']:.0f}",
            f"{v['x_first']:.2f}" if v else "-", f"{v['x_last']:.2f}" if v else "-",
            ("met" if v["bar_met"] else "MISSED") + (", moonshot met" if v["moonshot_met"] else "") if v else "-",
        ])
    header = ["start → registered", "resources", "first Register ms", "last Register ms", "last min–max",
              "first ×sync", f"last ×sync same N (≤{BAR:g}; moonshot ≤{MOONSHOT:g})", "bar"]
    return header, rows


def summary(result: dict[str, Any]) -> str:
    ratios = verdicts(result)
    parts = [f"{name.removeprefix('multidp ')} ×{v['x_last']:.2f}" for name, v in ratios.items()]
    missed = [name for name, v in ratios.items() if not v["bar_met"]]
    return (f"start → last resource registered, real drivers on simulated trees ({result['simulation']}), median of "
            f"{result['rounds']} spawns: {', '.join(parts)} the minimal sync plugin (bar ≤{BAR:g}: "
            f"{'met' if not missed else 'MISSED by ' + ', '.join(missed)})")
