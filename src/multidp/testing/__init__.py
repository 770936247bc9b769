"""Tools for testing multidp drivers the way multidp tests its own (part of the driver API).

A driver's tests import only :mod:`multidp` and this package.

- :class:`KubeletStandIn`: the kubelet's side of the Device Plugin API.
- :class:`DraKubelet`: the kubelet's side of DRA (registration, Prepare and
  Unprepare, the health stream, kubelet restarts and reboots); claims come from
  :class:`FakeApiServer` (``api.claims.add(...)``), which also keeps the
  ResourceSlices a host publishes (``api.slices``, a :class:`SliceStore`), and
  :class:`SchedulerStandIn` allocates claims from them.
- :class:`FakePodResources`: the kubelet's PodResources API.
- :func:`running_host`: a whole multidp host in-process, pointed at a stand-in.
- :func:`create_driver`, :func:`driver_config`: a driver, or its config, made
  as the host makes them on a node.
- :data:`v1beta1` and helpers: the wire messages, for talking to an endpoint.
- :class:`SamplePlugin`: a small in-memory driver (not an installed entry point).
- The pytest plugin (:mod:`multidp.testing.plugin`, loaded automatically once
  multidp is installed) provides the fixtures ``kubelet`` and ``multidp_host``.
"""

import os

# Before grpc is imported (the pytest plugin loads this package early): gRPC's
# C core logs connection details at INFO otherwise.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from multidp.host.host import Host  # noqa: E402
from multidp.plugins.registry import PluginInfo, PluginRegistry  # noqa: E402
from multidp.serving.sockets import socket_name  # noqa: E402
from multidp.testing.apiserver import FakeApiServer  # noqa: E402
from multidp.testing.attributes import attribute_problems  # noqa: E402
from multidp.testing.dists import fake_distribution  # noqa: E402
from multidp.testing.drakubelet import DraKubelet
from multidp.testing.draview import DraCallFailed, DraPluginView, HealthEntry, PrepareAnswer, PreparedDevice
from multidp.testing.drivers import check_config, create_driver, driver_config
from multidp.testing.host import running_host, simulation_of
from multidp.testing.kubelet import KubeletStandIn
from multidp.testing.kubeletview import AllocationFailed, KubeletAllocation, PluginOptions, Registration, ResourceView
from multidp.testing.podresources import FakePodResources
from multidp.testing.sample import SampleConfig, SampleDriver, SampleHardware, SamplePlugin
from multidp.testing.scheduler import SchedulerStandIn, Unschedulable
from multidp.testing.slices import SliceStore
from multidp.testing.util import percentile, short_socket_dir, wait_until
from multidp.testing.wire import allocate_request, preferred_request, response_dict, v1beta1, v1beta1_grpc

__all__ = [
    "AllocationFailed",
    "DraCallFailed",
    "DraKubelet",
    "DraPluginView",
    "FakeApiServer",
    "FakePodResources",
    "HealthEntry",
    "Host",
    "KubeletAllocation",
    "KubeletStandIn",
    "PluginInfo",
    "PluginOptions",
    "PluginRegistry",
    "PrepareAnswer",
    "PreparedDevice",
    "Registration",
    "ResourceView",
    "SampleConfig",
    "SampleDriver",
    "SampleHardware",
    "SamplePlugin",
    "SchedulerStandIn",
    "SliceStore",
    "allocate_request",
    "attribute_problems",
    "check_config",
    "create_driver",
    "driver_config",
    "fake_distribution",
    "percentile",
    "preferred_request",
    "response_dict",
    "running_host",
    "Unschedulable",
    "short_socket_dir",
    "simulation_of",
    "socket_name",
    "v1beta1",
    "v1beta1_grpc",
    "wait_until",
]
