"""Shared fixtures: the kubelet stand-in and host factory come from multidp.testing's pytest plugin."""

from __future__ import annotations

import pytest

from multidp.testing import SamplePlugin


@pytest.fixture
def sample() -> SamplePlugin:
    return SamplePlugin()

from dra_helpers import env  # noqa: E402, F401 - the DRA tests' fixture (a host, the DRA stand-in, claims)
