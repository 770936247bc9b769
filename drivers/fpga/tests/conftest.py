"""Fixtures for the fpga driver's tests: fake nodes built in temporary folders."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from fpga_helpers import MakeDriver  # noqa: E402
from multidp_fpga.config import FpgaConfig, validate  # noqa: E402
from multidp_fpga.driver import FpgaDriver  # noqa: E402
from multidp_fpga.fakesys import FakeNode  # noqa: E402


@pytest.fixture
def node(tmp_path: Path) -> FakeNode:
    return FakeNode(tmp_path / "node")


@pytest.fixture
def make_driver(node: FakeNode) -> MakeDriver:
    def make(**config: Any) -> FpgaDriver:
        return FpgaDriver(validate(FpgaConfig(**config)), node.sys, node.dev, logging.getLogger("multidp.driver.fpga"))

    return make
