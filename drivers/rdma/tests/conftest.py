"""Fixtures: fake nodes in temporary folders, and drivers created through the plugin's own hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rdma_helpers import create_driver

from multidp_rdma.driver import RdmaDriver
from multidp_rdma.faketree import FakeRdmaNode, standard_node


@pytest.fixture
def node(tmp_path: Path) -> FakeRdmaNode:
    """An empty node (rdma_cm present, no devices)."""
    return FakeRdmaNode(tmp_path / "node")


@pytest.fixture
def standard(tmp_path: Path) -> FakeRdmaNode:
    """mlx5_0 (IB, 0000:3b:00.0, NUMA 0), mlx4_0 (IB, two ports, port 2 down, 0000:5e:00.0, NUMA 0),
    mlx5_1 (RoCE PF ens5f0, 0000:86:00.0, NUMA 1) and its VFs mlx5_2 / mlx5_3 (0000:86:00.2 / .3)."""
    return standard_node(tmp_path / "node")


@pytest.fixture
def make_driver() -> Iterator[Callable[..., RdmaDriver]]:
    drivers: list[RdmaDriver] = []

    def make(fake: FakeRdmaNode, **config: Any) -> RdmaDriver:
        driver = create_driver(fake, **config)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close()
