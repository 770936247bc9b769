"""Helpers shared by the RDMA driver's tests (a unique module name: suites run together)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from multidp.testing import create_driver as create_on_node
from multidp.testing import wait_until

import multidp_rdma.plugin
from multidp_rdma.driver import RdmaDriver
from multidp_rdma.faketree import FakeRdmaNode

LOGGER = "multidp.driver.rdma"


def multidp_command(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """``multidp ARGS`` in a process of its own, as an operator runs it (MULTIDP_* only from ``variables``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_")}
    env.update(GRPC_VERBOSITY="ERROR", **variables)
    return subprocess.run([sys.executable, "-m", "multidp", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def create_driver(fake: FakeRdmaNode | Any, **config: Any) -> RdmaDriver:
    """A driver over ``fake`` (anything with ``sys`` and ``dev`` paths), created as the host creates it."""
    driver = create_on_node(multidp_rdma.plugin, config, name="rdma", sysfs_root=fake.sys, dev_root=fake.dev)
    assert isinstance(driver, RdmaDriver)
    return driver


def health(inventory: Any, resource: str = "rdma/hca") -> dict[str, str]:
    """ID → "Healthy"/"Unhealthy" of one resource in a scan's answer."""
    return {d.id: d.health.value for d in inventory.get(resource, [])}


def device(inventory: Any, device_id: str, resource: str = "rdma/hca") -> Any:
    return next(d for d in inventory[resource] if d.id == device_id)


def wait_for(condition: Any, what: str, timeout: float = 10.0) -> None:
    """Wait (generously) for ``condition()`` to hold: events arrive on other threads and processes."""
    wait_until(condition, timeout=timeout, what=what)
