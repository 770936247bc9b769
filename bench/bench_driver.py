"""The benchmark's driver: N devices on two NUMA nodes, health toggled by an "event".

The event source is a FIFO in the work directory (``MULTIDP_BENCH_FIFO``): a
thread blocks reading it, as a driver blocks on NVML events, and every byte
written flips the health of device 0 and calls ``notify()``. So the time from
the write to the kubelet's ListAndWatch update is the host's health
propagation path (notify → scan → diff → send) plus one pipe wake-up.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence

from multidp import (
    DRIVER_API_VERSION,
    AllocationRequest,
    ContainerAllocation,
    Device,
    DeviceNode,
    Driver,
    DriverContext,
    Health,
    Notify,
    hookimpl,
)

MULTIDP_DRIVER_API = DRIVER_API_VERSION  # shipped with the host: its own version (DRA mode needs 1.3)

RESOURCE = "bench.multidp.io/dev"


class BenchDriver(Driver):
    """``count`` devices in ``resources`` resources (``bench.multidp.io/dev``, then ``…/dev-1`` …)."""

    poll_interval = 60.0

    def __init__(self, count: int, fifo: str | None, resources: int = 1) -> None:
        self.devices = [Device(f"dev-{i}", numa_nodes=(i % 2,)) for i in range(count)]
        self.names = [RESOURCE] + [f"{RESOURCE}-{n}" for n in range(1, resources)]
        self.fifo = fifo
        self._lock = threading.Lock()

    def start(self, notify: Notify) -> None:
        if self.fifo:
            threading.Thread(target=self._events, args=(notify,), daemon=True, name="bench-events").start()

    def _events(self, notify: Notify) -> None:
        assert self.fifo is not None
        with open(self.fifo, "rb", buffering=0) as events:
            while events.read(1):
                with self._lock:
                    first = self.devices[0]
                    flipped = Health.UNHEALTHY if first.healthy else Health.HEALTHY
                    self.devices[0] = Device(first.id, flipped, first.numa_nodes)
                notify()

    def scan(self) -> Mapping[str, Sequence[Device]]:
        with self._lock:
            return {name: list(self.devices) for name in self.names}

    def allocate(self, request: AllocationRequest) -> ContainerAllocation:
        return ContainerAllocation(
            envs={"BENCH_DEVICES": ",".join(request.device_ids)},
            device_nodes=[DeviceNode("/dev/null", "/dev/null", "rw")],
        )


@hookimpl
def multidp_create_driver(context: DriverContext) -> Driver:
    config = context.config or {}
    return BenchDriver(int(config.get("count", 1)), os.environ.get("MULTIDP_BENCH_FIFO"),
                       int(config.get("resources", 1)))
