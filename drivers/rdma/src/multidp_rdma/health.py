"""Health of one RDMA device: its ports, its uverbs node, the host's rdma_cm node.

A device is Healthy only while (1) at least one port (or, with the ``all``
policy, every port) is ACTIVE or ACTIVE_DEFER with physical state LinkUp,
(2) it has a uverbs entry in sysfs and its node exists under the dev root,
(3) the host's rdma_cm node exists, and (4) discovery found no malformed file
of it. Port state is read when an event names the device, and on every poll
for a device no event covers: sysfs attributes raise no file events.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from multidp_rdma.inventory import LINK_UP, PHYS_STATES, PORT_STATES, TRAFFIC_STATES, RdmaDevice
from multidp_rdma.sysfs import ProblemLog, SysfsError, read_numbered

# (state, phys_state) per port number, from verbs; None when verbs cannot answer for the device.
VerbsPorts = Callable[[RdmaDevice], dict[int, tuple[int, int]] | None]


class PortState(msgspec.Struct, frozen=True):
    number: int
    state: int | None
    phys_state: int | None
    problem: str = ""

    @property
    def carries_traffic(self) -> bool:
        return self.state in TRAFFIC_STATES and self.phys_state == LINK_UP

    def describe(self) -> str:
        if self.problem:
            return f"port {self.number} unreadable"
        state = PORT_STATES.get(self.state or 0, str(self.state)) if self.state is not None else "?"
        phys = PHYS_STATES.get(self.phys_state or 0, str(self.phys_state)) if self.phys_state is not None else "?"
        return f"port {self.number} {state}/{phys}"


class Verdict(msgspec.Struct, frozen=True):
    healthy: bool
    reason: str
    ports: tuple[PortState, ...]


def read_port_states(device: RdmaDevice, log: ProblemLog, verbs: VerbsPorts | None = None) -> list[PortState]:
    """Every port's state: from verbs when it answers, from sysfs otherwise."""
    from_verbs = verbs(device) if verbs is not None else None
    states = []
    for port in device.ports:
        if from_verbs is not None and port.number in from_verbs:
            state, phys = from_verbs[port.number]
            states.append(PortState(port.number, state, phys))
            continue
        try:
            state, _ = read_numbered(port.state_file)
            phys, _ = read_numbered(port.phys_state_file)
        except SysfsError as exc:
            log.report(str(exc.path), f"RDMA device {device.name} port {port.number}: {exc}")
            states.append(PortState(port.number, None, None, str(exc)))
            continue
        states.append(PortState(port.number, state, phys))
    return states


@functools.lru_cache(maxsize=4096)
def _node_path(dev_root: Path, name: str) -> str:
    return os.path.join(dev_root, "infiniband", name)


def node_exists(dev_root: Path, name: str) -> bool:
    """Whether /dev/infiniband/<name> exists under ``dev_root``."""
    return os.path.exists(_node_path(dev_root, name))


def judge(
    device: RdmaDevice,
    ports: Sequence[PortState],
    all_ports: bool,
    uverbs_node: bool,
    rdma_cm_problem: str,
) -> Verdict:
    """Healthy or not, and why not (every reason, most fundamental first)."""
    reasons: list[str] = []
    if rdma_cm_problem:
        reasons.append(rdma_cm_problem)
    if device.uverbs is None:
        reasons.append("no uverbs entry in sysfs (is ib_uverbs loaded?)")
    elif not uverbs_node:
        reasons.append(f"{device.uverbs.host_path} is missing")
    reasons.extend(device.problems)
    good = [p for p in ports if p.carries_traffic]
    bad = [p for p in ports if not p.carries_traffic]
    if not ports:
        reasons.append("no ports")
    elif all_ports and bad:
        reasons.append("not every port is ACTIVE and LinkUp: " + ", ".join(p.describe() for p in bad))
    elif not good:
        reasons.append("no port is ACTIVE and LinkUp: " + ", ".join(p.describe() for p in bad))
    return Verdict(not reasons, "; ".join(reasons), tuple(ports))
