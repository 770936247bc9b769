"""How long GetPreferredAllocation's pick takes on the 8-GPU NVLink machine (a measurement, not a test).

Run: python drivers/nvidia/scripts/preferred_timing.py
It creates the driver over the fake NVML, discovers once, then times
``preferred_allocation`` for every request size with and without must-include
devices, and prints p50 / p99 / max in microseconds. The bar is 5 ms.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

from multidp import PreferenceRequest

from multidp_nvidia import machines
from multidp_nvidia.driver import NvidiaDriver
from multidp_nvidia.fake_nvml import FakeNvml
from multidp_nvidia.settings import Settings


def main(rounds: int = 200) -> None:
    machine = machines.nvlink8()
    with tempfile.TemporaryDirectory() as tmp:
        roots = machines.write_host_files(machine, Path(tmp))
        fake = FakeNvml(machine)
        driver = NvidiaDriver(Settings(health_enabled=False), lambda: fake, roots["sys"], roots["dev"],
                              roots["proc"], logging.getLogger("timing"))
        ids = [d.id for d in driver.scan()["nvidia.com/gpu"]]
        samples: list[float] = []
        for _ in range(rounds):
            for size in range(1, 9):
                for must in ([], ids[5:6], [ids[0], ids[6]][: min(size, 2)]):
                    request = PreferenceRequest("nvidia.com/gpu", tuple(ids), tuple(must), size)
                    start = time.perf_counter()
                    driver.preferred_allocation(request)
                    samples.append((time.perf_counter() - start) * 1e6)
        driver.close()
    samples.sort()
    p99 = samples[int(len(samples) * 0.99)]
    print(f"preferred allocation on 8 NVLink GPUs, {len(samples)} calls: p50 {statistics.median(samples):.0f} us, "
          f"p99 {p99:.0f} us, max {samples[-1]:.0f} us (bar: 5000 us)")


if __name__ == "__main__":
    main()
