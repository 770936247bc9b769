"""CDI answers, as the incumbents give them with ``--use-cdi``.

- Mellanox's plugin (pkg/cdi/cdi.go, pkg/resources/server.go): kind ``nvidia.com/net-rdma``, one
  CDI device per PCI function of the pool, named by its PCI address, with its RDMA char devices
  (``rw``); Allocate answers only the annotation ``cdi.k8s.io/nvidia.com_net-rdma`` naming them.
- The SR-IOV plugin (pkg/cdi/cdi.go): kind ``<prefix>/net-pci``, one device per device ID, and the
  annotation ``cdi.k8s.io/<prefix>_net-pci`` naming the allocated ones (its variables stay).

The host writes the specs (one file per kind) and checks the names an answer gives against them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from multidp import CDIDeviceSpec, CDISpec, DeviceNode

from multidp_rdma.inventory import DEV_DIR, RDMA_CM, RdmaDevice
from multidp_rdma.poolconfig import Pool

MELLANOX_KIND = "nvidia.com/net-rdma"  # cdiResourcePrefix / cdiResourceKind
SRIOV_CLASS = "net-pci"  # the SR-IOV plugin's poolType
PERMISSIONS = "rw"


def kind(pool: Pool) -> str:
    return MELLANOX_KIND if pool.rules.origin == "mellanox" else f"{pool.prefix}/{SRIOV_CLASS}"


def annotation_key(cdi_kind: str) -> str:
    """``cdi.AnnotationKey(vendor, class)`` without the ``cdi.k8s.io/`` the host adds."""
    return cdi_kind.replace("/", "_")


def device_name(device: RdmaDevice) -> str:
    return device.id


def qualified_names(pool: Pool, members: Iterable[RdmaDevice]) -> tuple[str, ...]:
    """What an answer for ``members`` of ``pool`` names (``Device.cdi_devices`` declares them to the host)."""
    cdi_kind = kind(pool)
    return tuple(f"{cdi_kind}={device_name(d)}" for d in members)


def device_nodes(device: RdmaDevice, include_issm: bool) -> list[DeviceNode]:
    chars = ([device.uverbs] if device.uverbs else []) + list(device.umads) + (
        list(device.issms) if include_issm else [])
    paths = [c.host_path for c in chars] + [f"{DEV_DIR}/{RDMA_CM}"]
    return [DeviceNode.same_path(path, PERMISSIONS) for path in paths]


def specs(pools: Iterable[tuple[Pool, Sequence[RdmaDevice]]]) -> list[CDISpec]:
    """One spec per kind, with every member of every pool of that kind (a device once)."""
    by_kind: dict[str, dict[str, CDIDeviceSpec]] = {}
    for pool, members in pools:
        devices = by_kind.setdefault(kind(pool), {})
        for device in members:
            devices.setdefault(device_name(device), CDIDeviceSpec(
                name=device_name(device), device_nodes=device_nodes(device, pool.include_issm)))
    return [CDISpec(kind=k, devices=list(devices.values())) for k, devices in sorted(by_kind.items())]
