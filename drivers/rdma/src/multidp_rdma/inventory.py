"""What discovery finds: RDMA devices, their PCI functions, ports and char devices.

These are read once per discovery (on a change of the class directories, a
udev event, or the periodic rescan); only port state and the presence of
device nodes are read on every poll.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path

import msgspec
from multidp import SemVer

DEV_DIR = "/dev/infiniband"
RDMA_CM = "rdma_cm"

# ports/N/state and phys_state values (include/rdma/ib_verbs.h).
PORT_STATES = {0: "NOP", 1: "DOWN", 2: "INIT", 3: "ARMED", 4: "ACTIVE", 5: "ACTIVE_DEFER"}
PHYS_STATES = {
    1: "Sleep", 2: "Polling", 3: "Disabled", 4: "PortConfigurationTraining", 5: "LinkUp",
    6: "LinkErrorRecovery", 7: "Phy Test",
}
TRAFFIC_STATES = frozenset({4, 5})
LINK_UP = 5

# Port link_layer as written in sysfs → the link type the incumbents' selectors use.
LINK_TYPES = {"infiniband": "infiniband", "ethernet": "ether"}
# A netdev's ``type`` (ARPHRD_*) → netlink's EncapType (vishvananda/netlink's encapType), for the incumbents.
ENCAP_TYPES = {1: "ether", 32: "infiniband", 772: "loopback", 65534: "none"}

Attribute = bool | int | str | SemVer  # a DRA attribute's value (driver API 1.4)


class PciFunction(msgspec.Struct, frozen=True):
    """The PCI function an RDMA device belongs to."""

    address: str
    vendor: str = ""  # "15b3": four hex digits, no 0x
    device: str = ""  # "1017"
    driver: str = ""  # "mlx5_core"; "" when unbound
    numa_node: int | None = None
    parent: str = ""  # the upstream bridge (or root complex) in /sys/devices
    netdevs: tuple[str, ...] = ()
    pf_address: str | None = None  # set on a VF
    pf_netdevs: tuple[str, ...] = ()  # the PF's netdevs for a VF; the function's own otherwise
    vf_index: int | None = None  # N of the PF's virtfnN link that leads here
    vf_count: int | None = None  # sriov_numvfs on a PF
    # The link type (netlink's EncapType: "ether", "infiniband") of the first netdev, and of the PF's first
    # netdev on a VF: what the incumbents' linkTypes compare with. "" where there is no such netdev.
    link_type: str = ""
    pf_link_type: str = ""
    pcie_root: str = ""  # the root complex it hangs off in /sys/devices ("pci0000:3a"); "" when not told

    @property
    def is_vf(self) -> bool:
        return self.pf_address is not None


class Port(msgspec.Struct, frozen=True, dict=True):  # dict: room for the cached_property values below
    """One port of an RDMA device: its sysfs directory and what does not change while it is up."""

    number: int
    path: Path
    link_layer: str = ""  # "InfiniBand" | "Ethernet"
    rate: str = ""

    @property
    def link_type(self) -> str:
        return LINK_TYPES.get(self.link_layer.lower(), self.link_layer.lower())

    # The two files health reads at every poll, joined once (a Path join costs more than the read's setup).
    @cached_property
    def state_file(self) -> str:
        return os.path.join(self.path, "state")

    @cached_property
    def phys_state_file(self) -> str:
        return os.path.join(self.path, "phys_state")


class CharDevice(msgspec.Struct, frozen=True):
    """A /dev/infiniband node of an RDMA device (uverbs, umad or issm)."""

    name: str  # "uverbs0", "umad1"
    port: int | None = None

    @property
    def host_path(self) -> str:
        return f"{DEV_DIR}/{self.name}"


class RdmaDevice(msgspec.Struct, frozen=True):
    """One RDMA device (``/sys/class/infiniband/<name>``) and all discovery knows of it."""

    name: str
    path: Path
    pci: PciFunction | None = None
    node_type: str = ""
    node_guid: str = ""
    fw_ver: str = ""
    ports: tuple[Port, ...] = ()
    uverbs: CharDevice | None = None
    umads: tuple[CharDevice, ...] = ()
    issms: tuple[CharDevice, ...] = ()
    netdevs: tuple[str, ...] = ()  # the function's netdevs and the ports' GID netdevs
    # Problems found at discovery that keep the device Unhealthy until fixed.
    problems: tuple[str, ...] = ()
    id: str = ""  # the device ID in an exclusive pool (set by discovery)
    # What DRA's scheduler is told about it (describe.attributes; set by discovery, once).
    attributes: Mapping[str, Attribute] = msgspec.field(default_factory=dict)

    def __hash__(self) -> int:
        # Over every field but ``attributes`` (a dict: unhashable); equality compares it too.
        return hash(tuple(getattr(self, name) for name in self.__struct_fields__ if name != "attributes"))

    @property
    def link_types(self) -> frozenset[str]:
        return frozenset(p.link_type for p in self.ports if p.link_type)

    @property
    def link_layers(self) -> str:
        return "/".join(dict.fromkeys(p.link_layer for p in self.ports if p.link_layer)) or "unknown"

    @property
    def numa_nodes(self) -> tuple[int, ...]:
        if self.pci is None or self.pci.numa_node is None:
            return ()
        return (self.pci.numa_node,)


class Discovery(msgspec.Struct, frozen=True):
    """The outcome of one discovery pass."""

    devices: tuple[RdmaDevice, ...] = ()
    skipped: dict[str, str] = msgspec.field(default_factory=dict)  # device name → why it was left out
