"""Verdicts for every device, with a memory of what was read and said.

Each pass reads the ports and uverbs node of the devices it is asked to (all of
them after a discovery or on a poll without events; those an event named
otherwise) and judges the others from what was read last. A change of verdict is
one log line; rdma_cm going and coming back is one line for all devices.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from multidp_rdma.bindings import VerbsReader
from multidp_rdma.health import PortState, Verdict, judge, node_exists, read_port_states
from multidp_rdma.inventory import DEV_DIR, RDMA_CM, RdmaDevice
from multidp_rdma.sysfs import ProblemLog


class HealthJudge:
    def __init__(self, dev_root: Path, log: logging.Logger, all_ports: bool, verbs: VerbsReader | None) -> None:
        self.dev_root = dev_root
        self.log = log
        self.all_ports = all_ports
        self.verbs = verbs
        self.problems = ProblemLog(log)
        self._readings: dict[str, tuple[list[PortState], bool]] = {}  # ports and uverbs node, as last read
        self._said: dict[str, tuple[bool, str]] = {}  # the verdict last logged, per device
        self._rdma_cm_missing = False

    def verdicts(self, devices: Sequence[RdmaDevice], only: set[str] | None) -> dict[str, Verdict]:
        """Every device's verdict, reading the ports and nodes of those in ``only`` (None: all) again."""
        # A node without RDMA devices has no rdma_cm either: nothing to say about it.
        rdma_cm_problem = self._rdma_cm_problem() if devices else ""
        if only is not None and all(d.name in only for d in devices):
            only = None
        verdicts = {d.name: self._verdict(d, rdma_cm_problem, only is None or d.name in only) for d in devices}
        if only is None:  # a partial pass does not see every problem: settling it would clear the others
            self.problems.settle("readable again")
        for gone in set(self._said) - set(verdicts):
            del self._said[gone]
        for gone in set(self._readings) - set(verdicts):
            del self._readings[gone]
        return verdicts

    def _rdma_cm_problem(self) -> str:
        missing = not node_exists(self.dev_root, RDMA_CM)
        if missing != self._rdma_cm_missing:
            self._rdma_cm_missing = missing
            if missing:
                self.log.error("%s is missing (%s): every RDMA device is Unhealthy until it is back; "
                               "load the rdma_ucm module", f"{DEV_DIR}/{RDMA_CM}",
                               self.dev_root / "infiniband" / RDMA_CM)
            else:
                self.log.info("%s is back: RDMA devices are judged on their own again", f"{DEV_DIR}/{RDMA_CM}")
        return f"{DEV_DIR}/{RDMA_CM} is missing on this node" if missing else ""

    def _verdict(self, device: RdmaDevice, rdma_cm_problem: str, read: bool) -> Verdict:
        """``read``: read its ports and node now; else judge what was read last."""
        reading = None if read else self._readings.get(device.name)
        if reading is None:
            verbs = self.verbs.ports if self.verbs is not None else None
            reading = (read_port_states(device, self.problems, verbs),
                       device.uverbs is not None and node_exists(self.dev_root, device.uverbs.name))
            self._readings[device.name] = reading
        ports, uverbs_node = reading
        own = judge(device, ports, self.all_ports, uverbs_node, "")
        previous = self._said.get(device.name)
        if previous is None or previous != (own.healthy, own.reason):
            label = f"RDMA device {device.name} ({device.id})"
            if not own.healthy:
                self.log.warning("%s is Unhealthy: %s", label, own.reason)
            elif previous is not None:
                self.log.info("%s is Healthy again", label)
            self._said[device.name] = (own.healthy, own.reason)
        if rdma_cm_problem:
            return judge(device, ports, self.all_ports, uverbs_node, rdma_cm_problem)
        return own
