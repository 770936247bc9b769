"""Simulated NVIDIA hardware for ``--simulate`` and ``multidp demo``: a fake NVML and its files.

Which machine is simulated is the driver's ``simulatedMachine`` setting (default
``nvlink8``). A fault travels the driver's normal path: :meth:`inject_fault`
makes a GPU raise XID 79 ("fallen off the bus") through the fake's event set
and stop answering NVML; :meth:`clear_fault` makes it answer again, and after
the simulation's short recovery time without a new XID the driver trusts it again.
"""

from __future__ import annotations

from pathlib import Path

from multidp import Simulation

from multidp_nvidia import machines
from multidp_nvidia.fake_nvml import FakeMachine, FakeNvml

RECOVER_AFTER_S = 1.0  # the demo should see the recovery, not wait five minutes
FAULT_XID = 79


def build_machine(name: str) -> FakeMachine:
    if name == "h100":
        return machines.recorded_h100()
    if name == "mig":
        return machines.mig_mixed()
    if name == "xid":
        return machines.with_scheduled_xid(machines.nvlink8())
    if name == "no-nvml":
        return machines.without_nvml()
    return machines.nvlink8()


class NvidiaSimulation(Simulation):
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.sysfs_root = workdir / "sys"
        self.dev_root = workdir / "dev"
        self.proc_root = workdir / "proc"
        self.driver_root = workdir / "driver"
        self.recover_after = RECOVER_AFTER_S
        self.nvml: FakeNvml | None = None
        self._broken: int | None = None

    def nvml_for(self, machine_name: str) -> FakeNvml:
        """The fake NVML of ``machine_name``, its files laid out under the work dir (made once)."""
        if self.nvml is None:
            machine = build_machine(machine_name)
            machines.write_host_files(machine, self.workdir)
            self.nvml = FakeNvml(machine)
        return self.nvml

    def _target(self) -> int:
        gpus = self.nvml.machine.gpus if self.nvml else []
        return 1 if len(gpus) > 1 else 0

    def inject_fault(self) -> str:
        if self.nvml is None or not self.nvml.machine.gpus:
            return "no simulated GPU to break"
        index = self._target()
        gpu = self.nvml.machine.gpus[index]
        self._broken = index
        self.nvml.raise_xid(index, FAULT_XID, lost=True)
        return f"GPU {index} ({gpu.uuid}) raised XID {FAULT_XID} (fallen off the bus) and stopped answering NVML"

    def clear_fault(self) -> str:
        if self.nvml is None or self._broken is None:
            return "nothing to repair"
        gpu = self.nvml.machine.gpus[self._broken]
        gpu.lost = False
        self._broken = None
        return (f"GPU {gpu.uuid} answers NVML again; trusted after {self.recover_after:g} s "
                "without a new critical XID")
