"""What the nvidia driver tells DRA about this machine's real GPUs (driver API 1.4), checked against DRA's rules.

On the GPU machine, from the repository root (the image lacks msgspec: carry its wheel in .whl)::

    PYTHONPATH=src:drivers/nvidia/src:drivers/nvidia python3 drivers/nvidia/device_attributes.py

Creates the driver as the host does, with the real NVML and /sys, in device-plugin and DRA mode;
scans three times (the facts must be read once, at discovery); prints each device's attributes and
capacity as JSON (also to $OUT/device_attributes.json) and every rule they break. Exit 0: none.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from multidp import DriverContext, SemVer
from multidp.testing import attribute_problems as all_problems

import multidp_nvidia.plugin as plugin
from multidp_nvidia.config import NvidiaConfig


def _plain(value: Any) -> Any:
    return {"version": value.value} if isinstance(value, SemVer) else value


def describe(frontend: str) -> tuple[dict[str, Any], list[str]]:
    """Each served device's attributes and capacity in ``frontend`` mode, and the rules they break."""
    context = DriverContext("nvidia", NvidiaConfig(), Path("/sys"), Path("/dev"), frontend=frontend,
                            log=logging.getLogger(f"nvidia.{frontend}"))
    driver = plugin.multidp_create_driver(context=context)
    try:
        for _ in range(2):
            driver.scan()
        served = driver.scan()
    finally:
        driver.close()
    devices = [device for items in served.values() for device in items]
    report = {resource: {d.id: {"attributes": {k: _plain(v) for k, v in d.attributes.items()},
                                "capacity": dict(d.capacity), "health": str(d.health)} for d in items}
              for resource, items in served.items()}
    return report, all_problems(devices) if devices else ["no device served"]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    result: dict[str, Any] = {}
    broken: list[str] = []
    for frontend in ("device-plugin", "dra"):
        report, problems = describe(frontend)
        result[frontend] = {"devices": report, "problems": problems}
        broken += problems
    result["same_in_both_modes"] = result["device-plugin"]["devices"] == result["dra"]["devices"]
    text = json.dumps(result, indent=1)
    print(text)
    out = Path(os.environ.get("OUT", "device_check_out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "device_attributes.json").write_text(text)
    return 0 if not broken and result["same_in_both_modes"] else 1


if __name__ == "__main__":
    sys.exit(main())
