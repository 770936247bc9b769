"""Shared fixtures: the kubelet stand-in and host factory come from multidp.testing's pytest plugin."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from multidp.testing import SamplePlugin

sys.path.insert(0, str(Path(__file__).parent))  # test helpers such as fake_apiserver


@pytest.fixture
def sample() -> SamplePlugin:
    return SamplePlugin()
