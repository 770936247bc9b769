"""Shared fixtures: the kubelet stand-in and host factory come from multidp.testing's pytest plugin."""

from __future__ import annotations

import pytest

from multidp.testing import SamplePlugin


@pytest.fixture
def sample() -> SamplePlugin:
    return SamplePlugin()
