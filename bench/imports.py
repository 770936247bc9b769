"""Import time per module: what each target imports until every resource is listed, and what that costs.

Two steps, because ``-X importtime`` cannot time imports that run in several threads at once (CPython
keeps one nesting counter and one "children's time" accumulator for the whole process: self times come
out negative or swollen, and cumulative times include other threads' work):
1. the target spawned under ``python -X importtime``, stderr to a file (a pipe nobody reads would fill and
   stall the plugin), read when every resource is listed: which modules, in which order (only the
   ``import time:`` lines are parsed; log lines are skipped);
2. those modules imported again in that order by a fresh interpreter on one thread, under
   ``-X importtime``: each module's self and cumulative time, what the set costs done in series.
Medians over a few spawns, taken in turns. One more column: every driver on this machine's own /sys and
/dev, no simulation modules, read NO_SIM_S after the spawn (without devices nothing registers): the
modules a real node imports, less what a driver loads only when it finds devices.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from typing import Any

from spawn import Spawned, Target, driver_targets, minimal

LINE = re.compile(r"^import time:\s+(-?\d+) \|\s+(\d+) \|( *)(\S+)\s*$")
TOP = 12  # modules shown by cumulative time, per target
NO_SIM_S = 3.0
REPLAY = """import sys
for name in sys.argv[1:]:
    try:
        __import__(name)  # the import statement's path, where -X importtime times (importlib's is untimed)
    except BaseException:
        pass
"""


def parse(text: str) -> dict[str, tuple[float, float]]:
    """Module → (self ms, cumulative ms) from -X importtime output, in the order the imports finished;
    other lines (logs) are skipped."""
    return {name: (own, cumulative) for name, own, cumulative, _ in parse_lines(text)}


def parse_lines(text: str) -> list[tuple[str, float, float, int]]:
    """(module, self ms, cumulative ms, nesting depth) for each -X importtime line, in order."""
    found = []
    for line in text.splitlines():
        match = LINE.match(line)
        if match:
            found.append((match[4], int(match[1]) / 1e3, int(match[2]) / 1e3, len(match[3]) // 2))
    return found


def replay_order(text: str) -> list[str]:
    """The modules to import again: first those imported at the top (nesting depth 0: by the program, or
    lazily by a function), in order, each of which brings its own imports in their natural order, so
    that cumulative times mean what they say; then every other module, in case one came in otherwise."""
    lines = parse_lines(text)
    return list(dict.fromkeys([name for name, _, _, depth in lines if depth == 0] + [name for name, *_ in lines]))


def package(module: str) -> str:
    top = module.split(".")[0]
    return "stdlib" if top in sys.stdlib_module_names or top.startswith("_") else top


def one_spawn(target: Target, resources: int) -> str:
    """What ``target`` wrote under -X importtime until every resource was listed (its times are
    unreliable if threads imported at once)."""
    # The child writes through its own handle; this side reads through another (no shared file offset).
    with tempfile.NamedTemporaryFile("w", prefix="mdpimp", suffix=".err") as stderr:
        spawned = Spawned(target, stderr=stderr, python_flags=("-X", "importtime"))
        try:
            if target.simulate:
                spawned.wait_listed(resources)
            else:
                time.sleep(NO_SIM_S)
            with open(stderr.name) as written:
                text = written.read()
            return text[:text.rfind("\n") + 1]  # not a line the child is still writing
        finally:
            spawned.close()


def replay(modules: list[str]) -> dict[str, tuple[float, float]]:
    """``modules`` imported in order by a fresh interpreter on one thread (``__main__`` modules left out:
    importing them would run them)."""
    names = [m for m in modules if not m.endswith("__main__")]
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", REPLAY, *names], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120,
                          env={**os.environ, "GRPC_VERBOSITY": "ERROR"})
    return parse(done.stderr)


def import_times(spawns: int, counts: dict[str, int]) -> dict[str, Any]:
    """Per target: total import time, time per top-level package, and the modules that took longest.
    ``counts``: how many resources each multidp target lists (spawn.resource_counts)."""
    drivers = driver_targets()
    targets = [(minimal(1), 1)] + [(t, counts[t.name]) for t in drivers]
    if drivers:  # the last: all of them (or the only one)
        targets.append((replace(drivers[-1], name=f"{drivers[-1].name}, no sim", simulate=False), 0))
    runs: dict[str, list[dict[str, tuple[float, float]]]] = {t.name: [] for t, _ in targets}
    overlapped: dict[str, int] = {t.name: 0 for t, _ in targets}
    imported: dict[str, list[int]] = {t.name: [] for t, _ in targets}
    for n in range(spawns):
        print(f"… import times, round {n + 1} of {spawns}", file=sys.stderr, flush=True)
        for target, resources in targets:
            text = one_spawn(target, resources)
            seen = parse(text)
            overlapped[target.name] += any(own < 0 for own, _ in seen.values())
            imported[target.name].append(len(seen))
            runs[target.name].append(replay(replay_order(text)))
    result = {}
    for name, got in runs.items():
        totals = [sum(s for s, _ in run.values()) for run in got]
        modules = set().union(*got)
        cumulative = {m: statistics.median(run.get(m, (0.0, 0.0))[1] for run in got) for m in modules}
        own = {m: statistics.median(run.get(m, (0.0, 0.0))[0] for run in got) for m in modules}
        packages: dict[str, float] = {}
        for module, ms in own.items():
            packages[package(module)] = packages.get(package(module), 0.0) + ms
        result[name] = {
            "total_ms": statistics.median(totals), "totals_ms": totals, "modules": statistics.median(imported[name]),
            "spawns_with_threaded_imports": overlapped[name],
            "packages_ms": dict(sorted(packages.items(), key=lambda kv: -kv[1])),
            "top_cumulative": [{"module": m, "cumulative_ms": cumulative[m], "self_ms": own[m]}
                               for m in sorted(modules, key=lambda m: -cumulative[m])[:TOP]],
        }
    return {"spawns": spawns, "targets": result}


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Targets as columns; the total, then each package that costs someone ≥ 5 ms, then the rest."""
    targets = result["targets"]
    names = list(targets)
    shown = sorted({p for t in targets.values() for p, ms in t["packages_ms"].items() if ms >= 5.0},
                   key=lambda p: -max(t["packages_ms"].get(p, 0.0) for t in targets.values()))
    rows = [["total"] + [f"{targets[n]['total_ms']:.0f}" for n in names],
            ["modules"] + [f"{targets[n]['modules']:.0f}" for n in names],
            ["threads imported at once"] + [f"{targets[n]['spawns_with_threaded_imports']}/{result['spawns']} spawns"
                                            for n in names]]
    for pkg in shown:
        rows.append([pkg] + [f"{targets[n]['packages_ms'].get(pkg, 0.0):.1f}" for n in names])
    rows.append(["(other)"] + [f"{sum(ms for p, ms in targets[n]['packages_ms'].items() if p not in shown):.1f}"
                               for n in names])
    return ["import ms (in series, median)"] + names, rows


def top_modules(result: dict[str, Any]) -> str:
    lines = []
    for name, t in result["targets"].items():
        items = ", ".join(f"{m['module']} {m['cumulative_ms']:.0f}" for m in t["top_cumulative"])
        lines.append(f"  {name}: {items}")
    return f"slowest imports by cumulative ms (median of {result['spawns']}):\n" + "\n".join(lines)
