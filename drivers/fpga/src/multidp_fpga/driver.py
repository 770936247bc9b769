"""The fpga driver: scans both vendors' sysfs, places devices, answers Allocate."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from multidp import (
    AllocationRefused,
    AllocationRequest,
    CDIDeviceSpec,
    CDIHook,
    CDISpec,
    ContainerAllocation,
    Device,
    Driver,
)

from multidp_fpga.amdserve import AmdServer
from multidp_fpga.amdsettings import AmdSettings
from multidp_fpga.config import FpgaConfig
from multidp_fpga.intel import IntelScanner
from multidp_fpga.inventory import Grants, Observed, Placer, ProblemLog
from multidp_fpga.naming import INTEL_CDI_KIND
from multidp_fpga.reads import Reads


class FpgaDriver(Driver):
    """Serves Intel (DFL/OPAE) and AMD/Xilinx (XRT) FPGAs found under ``sysfs_root``.

    Every scan reads the class directories and the id files again: the ids are
    sysfs attributes, which raise no file events, and devices that appear or
    vanish show up at the next scan without a restart. A scan first repeats the
    reads of the last full scan (:mod:`multidp_fpga.reads`): when every answer
    is the same, so is the result, and the rest of the work is skipped.

    ``dra`` (the host serves the devices through DRA): answers are device nodes, mounts and CDI names
    only, which the host can hand over as CDI; Intel's region-mode annotation is left out.
    """

    def __init__(self, config: FpgaConfig, sysfs_root: Path, dev_root: Path, log: logging.Logger,
                 amd: AmdSettings | None = None, dra: bool = False) -> None:
        self.config = config
        self.dra = dra  # served through DRA: answers without annotations (see allocate)
        self.poll_interval = config.poll_interval
        self.log = log
        self.reads = Reads()
        self.intel = (IntelScanner(sysfs_root, dev_root, config.mode, config.card_modes, self.reads)
                      if config.intel else None)
        if amd is None:
            amd = AmdSettings(legacy_names=config.amd_legacy_names, mount_nodes=config.amd_mount_nodes)
        self.amd = AmdServer(sysfs_root, dev_root, amd, self.reads) if config.amd else None
        self.placer = Placer(config.names)
        self.problems = ProblemLog(log)
        self._layout: str | None = None
        self._lock = threading.Lock()
        self._grants: Grants = {}
        self._unmatched_warned: set[str] = set()
        self._last: Mapping[str, Sequence[Device]] | None = None

    def scan(self) -> Mapping[str, Sequence[Device]]:
        if self._last is not None and self.reads.unchanged():
            return self._last
        self._last = None
        with self.reads.recording():
            self._last = self._full_scan()
        return self._last

    def _full_scan(self) -> Mapping[str, Sequence[Device]]:
        problems: dict[str, str] = {}
        observed: list[Observed] = []
        if self.intel is not None:
            observed += self.intel.scan(problems)
            self._note_layout(self.intel.layout.name if self.intel.layout else None)
            self._note_unmatched_modes(self.intel)
        if self.amd is not None:
            observed += self.amd.scan(problems)
        inventory, grants = self.placer.place(observed, problems)
        self.problems.update(problems)
        with self._lock:
            self._grants = grants
        return inventory

    def _note_layout(self, layout: str | None) -> None:
        if layout != self._layout:
            if layout is not None:
                extra = f", {len(self.config.card_modes)} card(s) set apart" if self.config.card_modes else ""
                self.log.info("Intel FPGAs: reading the %s kernel driver's sysfs layout (%s mode%s); Intel's node "
                              "annotation fpga.intel.com/device-plugin-mode picks the mode when configByLabel "
                              "names it (docs/drop-in/fpga.md)", layout, self.config.mode, extra)
            elif self._layout is not None:
                self.log.info("Intel FPGAs: no DFL or OPAE sysfs class directory any more")
            self._layout = layout

    def _note_unmatched_modes(self, intel: IntelScanner) -> None:
        """One warning per ``cardModes`` address that matches no card: it would be ignored silently."""
        for address in intel.unmatched_card_modes():
            if address not in self._unmatched_warned:
                self._unmatched_warned.add(address)
                found = ", ".join(sorted(intel.owners)) or "none"
                self.log.warning("drivers.fpga.cardModes[%r] names no Intel FPGA card on this node (the PCI "
                                 "function its FME hangs under; cards found: %s): it is ignored until it "
                                 "does, and such a card is served in mode %s", address, found, self.config.mode)

    def allocate(self, request: AllocationRequest) -> ContainerAllocation:
        with self._lock:
            grants = self._grants
        answer = ContainerAllocation()
        for device_id in request.device_ids:
            grant = grants.get((request.resource, device_id))
            if grant is None:
                raise AllocationRefused(f"{request.resource}: device {device_id} is no longer on this node")
            answer.device_nodes.extend(grant.device_nodes)
            answer.mounts.extend(grant.mounts)
            if not self.dra:
                # Intel's region-mode annotation; through DRA there are none, and Intel's CRI hook (run by the
                # CDI device) no longer reads it since v0.31.
                answer.annotations.update(grant.annotations)
            answer.cdi_devices.extend(d for d in grant.cdi_devices if d not in answer.cdi_devices)
        return answer

    def cdi_specs(self) -> Sequence[CDISpec]:
        """Intel's region-mode CDI devices: one per FME, running Intel's CRI hook at createRuntime."""
        with self._lock:
            grants = self._grants
        names = sorted({name.partition("=")[2] for grant in grants.values() for name in grant.cdi_devices
                        if name.startswith(f"{INTEL_CDI_KIND}=")})
        if not names:
            return ()
        hook = CDIHook("createRuntime", self.config.intel_hook)
        return (CDISpec(INTEL_CDI_KIND, [CDIDeviceSpec(name, hooks=(hook,)) for name in names]),)
