"""Helpers shared by the RDMA driver's tests (a unique module name: suites run together)."""

from __future__ import annotations

import logging
from typing import Any

from multidp.config.sections import convert_section
from multidp.driver import DriverContext

import multidp_rdma.plugin
from multidp_rdma.driver import RdmaDriver
from multidp_rdma.faketree import FakeRdmaNode

LOGGER = "multidp.driver.rdma"


def create_driver(fake: FakeRdmaNode | Any, **config: Any) -> RdmaDriver:
    """A driver over ``fake`` (anything with ``sys`` and ``dev`` paths), its config validated as the host does."""
    converted = convert_section("rdma", dict(config), multidp_rdma.plugin.multidp_config_type(), None)
    context = DriverContext(name="rdma", config=converted, sysfs_root=fake.sys, dev_root=fake.dev,
                            log=logging.getLogger(LOGGER))
    driver = multidp_rdma.plugin.multidp_create_driver(context=context)
    assert isinstance(driver, RdmaDriver)
    return driver


def health(inventory: Any, resource: str = "rdma/hca") -> dict[str, str]:
    """ID → "Healthy"/"Unhealthy" of one resource in a scan's answer."""
    return {d.id: d.health.value for d in inventory.get(resource, [])}


def device(inventory: Any, device_id: str, resource: str = "rdma/hca") -> Any:
    return next(d for d in inventory[resource] if d.id == device_id)
