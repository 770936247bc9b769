"""Tools for testing multidp drivers the way multidp tests its own.

- :class:`KubeletStandIn`: the kubelet's side of the Device Plugin API.
- :func:`running_host`: a whole multidp host in-process, pointed at a stand-in.
- :class:`SamplePlugin`: a small in-memory driver (not an installed entry point).
- The pytest plugin (:mod:`multidp.testing.plugin`, loaded automatically once
  multidp is installed) provides the fixtures ``kubelet`` and ``multidp_host``.
"""

import os

# Before grpc is imported (the pytest plugin loads this package early): gRPC's
# C core logs connection details at INFO otherwise.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from multidp.testing.dists import fake_distribution  # noqa: E402
from multidp.testing.host import running_host
from multidp.testing.kubelet import AllocationFailed, KubeletStandIn, ResourceView
from multidp.testing.sample import SampleConfig, SampleDriver, SampleHardware, SamplePlugin
from multidp.testing.util import short_socket_dir, wait_until

__all__ = [
    "AllocationFailed",
    "KubeletStandIn",
    "ResourceView",
    "SampleConfig",
    "SampleDriver",
    "SampleHardware",
    "SamplePlugin",
    "fake_distribution",
    "running_host",
    "short_socket_dir",
    "wait_until",
]
