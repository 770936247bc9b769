"""``multidp kubelet``: the kubelet stand-in as its own process, saying what it receives.

For driver authors and anyone checking a node's plugins by hand: start it on a
folder, point ``multidp run --plugin-dir`` (or any device plugin) at that
folder, and watch registrations, device lists and health changes arrive.
``--allocate RESOURCE=N`` allocates as the kubelet would once N devices are
healthy and prints the answer. SIGHUP restarts it as the kubelet restarts
(every socket in the folder removed, a new kubelet.sock); SIGINT or SIGTERM
stops it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from multidp.cli.exits import EXIT_OK, UsageError
from multidp.testing.kubelet import KubeletStandIn
from multidp.testing.kubeletview import AllocationFailed, ResourceView

Devices = dict[str, tuple[str, tuple[int, ...]]]
SHOWN_DEVICES = 8  # per resource, on its first list; the rest as a count


def parse_allocations(pairs: Sequence[str]) -> dict[str, int]:
    """``--allocate RESOURCE=N`` flags."""
    wanted: dict[str, int] = {}
    for pair in pairs:
        resource, sep, count = pair.rpartition("=")
        if not sep or not resource or not count.isdigit() or int(count) < 1:
            raise UsageError(f"--allocate {pair!r}: write RESOURCE=N, N a whole number of at least 1 "
                             "(e.g. nvidia.com/gpu=1)")
        wanted[resource] = int(count)
    return wanted


def run_kubelet(directory: Path, allocations: dict[str, int], say: Callable[[str], None] = print) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    kubelet = KubeletStandIn(directory).start()
    stop, restart = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        (restart if signum == signal.SIGHUP else stop).set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    say(f"kubelet stand-in: serving {kubelet.socket_path} (Device Plugin API v1beta1); "
        f"try: multidp run --simulate --plugin-dir {directory}")
    say("kubelet stand-in: SIGHUP restarts it as the kubelet restarts; Ctrl-C stops it")
    watcher = _Watcher(kubelet, allocations, say)
    try:
        while not stop.is_set():
            if restart.is_set():
                restart.clear()
                kubelet.restart()
                say("kubelet restarted: every socket removed, a new kubelet.sock; plugins must register again")
            watcher.wait_and_report(timeout=0.5)
    finally:
        kubelet.shutdown()
    say("kubelet stand-in: stopped")
    return EXIT_OK


class _Watcher:
    """Turns the stand-in's state into lines: what changed since the last look."""

    def __init__(self, kubelet: KubeletStandIn, allocations: dict[str, int], say: Callable[[str], None]) -> None:
        self.kubelet, self.pending, self.say = kubelet, dict(allocations), say
        self.registrations = self.errors = 0
        self.seen: dict[str, tuple[int, Devices]] = {}  # resource -> (updates, devices) last reported

    def _changed(self) -> bool:
        k = self.kubelet
        return (len(k.registrations) != self.registrations or len(k.errors) != self.errors
                or any(v.updates != self.seen.get(r, (0, {}))[0] for r, v in k.resources.items()))

    def wait_and_report(self, timeout: float) -> None:
        try:
            self.kubelet.wait_for(self._changed, timeout, "a change")
        except AssertionError:
            return
        k = self.kubelet
        # Counted from what was printed, not from len(): Register runs on gRPC threads meanwhile.
        registrations, errors = k.registrations[self.registrations:], k.errors[self.errors:]
        self.registrations += len(registrations)
        self.errors += len(errors)
        for reg in registrations:
            opts = reg.options
            self.say(f"registered {reg.resource} from {reg.endpoint} (preferred allocation: "
                     f"{'yes' if opts.get_preferred_allocation_available else 'no'}, pre-start: "
                     f"{'yes' if opts.pre_start_required else 'no'})")
        for error in errors:
            self.say(f"refused a registration: {error}")
        for resource, view in list(k.resources.items()):
            self._report_devices(resource, view)
        for resource, count in list(self.pending.items()):
            # Counted in the list printed above (a newer one may have come meanwhile): the reader sees
            # the devices before the allocation made from them.
            reported = self.seen.get(resource, (0, {}))[1]
            if sum(health == "Healthy" for health, _ in reported.values()) >= count:
                del self.pending[resource]
                self._allocate(resource, count)

    def _report_devices(self, resource: str, view: ResourceView) -> None:
        updates, devices = view.updates, dict(view.devices)
        last = self.seen.get(resource)
        if updates == 0 or (last is not None and last[0] == updates):
            return  # registered, no list yet; or nothing new
        self.seen[resource] = (updates, devices)
        state = "" if view.stream_open else " (stream ended: every device Unhealthy)"
        self.say(f"{resource}: capacity {view.capacity}, allocatable {view.allocatable}{state}")
        before = last[1] if last is not None else {}
        lines = [f"  + {i} {health} NUMA {','.join(map(str, numa)) or '-'}" for i, (health, numa) in devices.items()
                 if i not in before]
        lines += [f"  - {i}" for i in before if i not in devices]
        lines += [f"  {i} {before[i][0]} -> {health}" for i, (health, _) in devices.items()
                  if i in before and before[i][0] != health]
        for line in lines[:SHOWN_DEVICES]:
            self.say(line)
        if len(lines) > SHOWN_DEVICES:
            self.say(f"  … and {len(lines) - SHOWN_DEVICES} more")

    def _allocate(self, resource: str, count: int) -> None:
        try:
            answer = self.kubelet.allocate(resource, count)
        except AllocationFailed as exc:
            self.say(f"allocate {count} of {resource}: failed: {exc}")
            return
        self.say(f"allocated {', '.join(answer.device_ids)} of {resource}:")
        for line in answer.describe():
            self.say(f"  {line}")
