"""multidp: a Kubernetes device plugin host with drivers as plugins.

What drivers use: the dataclasses in :mod:`multidp.model`, the
:class:`Driver` base class, the hook markers, and the errors.
"""

from multidp.driver import Driver, DriverContext, Notify, Simulation
from multidp.errors import AllocationRefused, ConfigError
from multidp.hookspecs import hookimpl
from multidp.model import (
    AllocationRequest,
    CDIDeviceSpec,
    CDIHook,
    CDISpec,
    ContainerAllocation,
    Device,
    DeviceNode,
    Health,
    Mount,
    PreferenceRequest,
)

__version__ = "0.1.0"

__all__ = [
    "AllocationRefused",
    "AllocationRequest",
    "CDIDeviceSpec",
    "CDIHook",
    "CDISpec",
    "ConfigError",
    "ContainerAllocation",
    "Device",
    "DeviceNode",
    "Driver",
    "DriverContext",
    "Health",
    "Mount",
    "Notify",
    "PreferenceRequest",
    "Simulation",
    "hookimpl",
    "__version__",
]
