"""What a process and everything it started cost, read from /proc from outside (no thread inside it).

CPU of a process tree = utime + stime + cutime + cstime of every live process under the root: a helper
that exits and is reaped moves its time into its parent's cutime/cstime, so nothing is lost or counted
twice between two readings, but it counts in 10 ms ticks; each thread's schedstat counts nanoseconds, so
it is the figure unless a thread ended inside the window. Threads and wake-ups are read per thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def stat_fields(path: Path) -> list[str] | None:
    """The fields of a /proc stat file after the command name (which may hold spaces and parentheses):
    index 0 is the state, 1 the ppid, 11-14 utime, stime, cutime, cstime, 17 num_threads."""
    try:
        text = path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None  # it exited while we looked
    return text.rsplit(")", 1)[1].split()


def tree(root: int) -> list[int]:
    """``root`` and every process descended from it, as /proc shows them now."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = stat_fields(Path(entry.path) / "stat")
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


@dataclass(frozen=True)
class TreeReading:
    """One reading of a process tree."""

    at_s: float  # time.monotonic() of the reading
    cpu_ticks: int  # /proc/PID/stat: all threads, dead ones and reaped children included, in 10 ms ticks
    processes: int
    threads: int
    per_thread: dict[tuple[int, int], tuple[int, int]]  # (pid, tid) → (ns on a CPU, times scheduled in)


def read_tree(root: int, at_s: float) -> TreeReading:
    cpu = threads = 0
    pids = tree(root)
    per_thread: dict[tuple[int, int], tuple[int, int]] = {}
    for pid in pids:
        fields = stat_fields(Path(f"/proc/{pid}/stat"))
        if fields is None:
            continue
        cpu += sum(int(f) for f in fields[11:15])
        threads += int(fields[17])
        per_thread.update(thread_schedstats(pid))
    return TreeReading(at_s, cpu, len(pids), threads, per_thread)


def thread_schedstats(pid: int) -> dict[tuple[int, int], tuple[int, int]]:
    """Each thread's /proc schedstat: nanoseconds on a CPU, and how many times it was scheduled in
    (each a wake-up, or a return after preemption)."""
    found = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return {}
    for tid in tids:
        try:
            run_ns, _, slices = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[:3]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        found[(pid, int(tid))] = (int(run_ns), int(slices))
    return found


def per_minute(before: TreeReading, after: TreeReading) -> dict[str, Any]:
    """CPU (ms) and wake-ups per minute between two readings, and the tree's shape at the second.

    CPU is the threads' schedstat run time (nanoseconds; a thread born inside the window counts from
    zero), unless a thread or process of the first reading is gone by the second, whose time schedstat
    would lose: then it is the 10 ms ticks of /proc/PID/stat, which keep it."""
    minutes = (after.at_s - before.at_s) / 60
    ticks_ms = (after.cpu_ticks - before.cpu_ticks) * 1e3 / TICKS_PER_S
    precise_ms = sum(ns - before.per_thread.get(key, (0, 0))[0] for key, (ns, _) in after.per_thread.items()) / 1e6
    wakeups = sum(n - before.per_thread.get(key, (0, 0))[1] for key, (_, n) in after.per_thread.items())
    vanished = len(before.per_thread.keys() - after.per_thread.keys())
    cpu_ms = ticks_ms if vanished else precise_ms
    return {"cpu_ms_per_min": cpu_ms / minutes, "core_percent": cpu_ms / (minutes * 60e3) * 100,
            "cpu_source": "ticks" if vanished else "schedstat", "cpu_ms_per_min_ticks": ticks_ms / minutes,
            "threads_ended": vanished, "wakeups_per_min": wakeups / minutes, "threads": after.threads,
            "processes": after.processes, "window_s": after.at_s - before.at_s}
