"""Shared fixtures: the kubelet stand-in and host factory come from multidp.testing's pytest plugin."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from multidp.testing import SamplePlugin  # noqa: E402


@pytest.fixture
def sample() -> SamplePlugin:
    return SamplePlugin()
