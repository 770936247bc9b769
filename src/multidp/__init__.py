"""multidp: a Kubernetes device plugin host with drivers as plugins.

This package's top level is the driver API, and the only part of multidp a
driver imports (its tests may also import :mod:`multidp.testing`): the
dataclasses a driver returns, the :class:`Driver` base class, the hook marker,
the errors, and helpers for names, replica IDs and preferred allocations.
Everything else (``multidp.config``, ``multidp.serving``, ...) is the host's
and may change without notice; ``make test`` fails a driver that imports it.

``DRIVER_API_VERSION`` is the version of this API, ``major.minor``. A plugin
module may declare the version it was written for as ``MULTIDP_DRIVER_API``;
the host refuses a plugin written for another major version or a newer minor
one, and says so in ``multidp drivers`` (docs/writing-a-driver.md).
"""

from multidp.configfiles import parse_yaml, read_small_file
from multidp.driver import Driver, DriverContext, Notify, Simulation
from multidp.errors import AllocationRefused, ConfigError, MultidpError, split_validation_error
from multidp.hookspecs import hookimpl
from multidp.model import (
    CDI_HOOK_NAMES,
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
    SemVer,
)
from multidp.names import (
    DNS1123_SUBDOMAIN,
    LABEL_PREFIX,
    MAX_DEVICE_ID_BYTES,
    MAX_REPLICAS,
    QUALIFIED_NAME_PART,
    REPLICA_SEPARATOR,
    base_id,
    list_some,
    replica_id,
    resource_name_problem,
    shorten,
)
from multidp.preferred import pack, pack_replicas, spread_replicas

__version__ = "0.1.0"

# 1.0: the contract as first published (hooks, Driver, model, errors, helpers above).
# 1.1: DriverContext.checking, files and local_path() (``multidp config check``).
# 1.2: Device.cdi_devices: a device whose CDI spec cannot be written is advertised Unhealthy.
# 1.3: DriverContext.frontend ("dra": answers complete as CDI); AllocationRequest.claim_uid and request_name.
# 1.4: Device.attributes and capacity (SemVer): what DRA's ResourceSlices say about each device.
DRIVER_API_VERSION = "1.4"

__all__ = [
    "CDI_HOOK_NAMES",
    "DNS1123_SUBDOMAIN",
    "DRIVER_API_VERSION",
    "LABEL_PREFIX",
    "MAX_DEVICE_ID_BYTES",
    "MAX_REPLICAS",
    "QUALIFIED_NAME_PART",
    "REPLICA_SEPARATOR",
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
    "MultidpError",
    "Notify",
    "PreferenceRequest",
    "SemVer",
    "Simulation",
    "base_id",
    "hookimpl",
    "list_some",
    "pack",
    "pack_replicas",
    "parse_yaml",
    "read_small_file",
    "replica_id",
    "resource_name_problem",
    "shorten",
    "spread_replicas",
    "split_validation_error",
    "__version__",
]
