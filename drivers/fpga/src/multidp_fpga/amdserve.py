"""From what the AMD scanners read to observed devices: names, U30 cards, shared IDs.

- Names follow :mod:`multidp_fpga.amdnames`.
- ``U30AllocUnit=Card``: the devices of one U30 card (same resource, same serial number) are one
  device whose ID is its lowest PCI address and whose Allocate gives every node of the card. AMD's
  plugin advertises one of them (whichever its map yields first) and adds the others at Allocate.
- ``VirtualDev``: each device (each card, under ``Card``) is advertised as ``<PCI address>-<i>``,
  ``i`` from 0 to ``VirtualNum`` - 1: IDs this driver makes, not the host's ``<id>::<n>`` replicas,
  so that pod specs and checkpoints written for AMD's plugin keep working.
"""

from __future__ import annotations

from pathlib import Path

from multidp import DeviceNode, Mount

from multidp_fpga.amd import AWS_SERIAL, PERMISSIONS, AmdDevice, AmdScanner
from multidp_fpga.amdnames import Facts, amd_name, is_u30, u30_shell
from multidp_fpga.amdsettings import AmdSettings
from multidp_fpga.describe import amd
from multidp_fpga.inventory import Grant, Observed
from multidp_fpga.ma35 import Ma35Scanner
from multidp_fpga.reads import Reads


class AmdServer:
    """Scans Alveo cards and MA35 transcoders and serves them as AMD's plugin would name them."""

    def __init__(self, sysfs_root: Path, dev_root: Path, settings: AmdSettings, reads: Reads | None = None) -> None:
        self.settings = settings
        self.alveo = AmdScanner(sysfs_root, dev_root, reads)
        self.ma35 = Ma35Scanner(sysfs_root, dev_root, reads)

    def scan(self, problems: dict[str, str]) -> list[Observed]:
        devices = self.ma35.scan(problems) + self.alveo.scan(problems)  # AMD's order: transcoders first
        observed = []
        for members in self._units(devices, problems):
            unit_id = members[0].address
            count = self.settings.virtual_num
            for device_id in [unit_id] if count is None else [f"{unit_id}-{i}" for i in range(count)]:
                observed.append(self._observed(device_id, members, problems))
        return observed

    def facts(self, device: AmdDevice, device_id: str) -> Facts:
        shell = u30_shell(device.shell or "", self.settings.u30_common_names)
        return Facts(shell, device.timestamp, device.uuid, device_id, device.device_id, device.serial)

    def name(self, device: AmdDevice, device_id: str, problems: dict[str, str]) -> str | None:
        if device.shell is None:
            return None
        name, note = amd_name(self.facts(device, device_id), self.settings.u30_common_names, self.settings.names,
                              self.settings.legacy_names)
        if note:
            problems[f"name:{device_id}"] = note
        return name

    def _units(self, devices: list[AmdDevice], problems: dict[str, str]) -> list[list[AmdDevice]]:
        """Devices grouped into what one ID stands for: a U30 card under ``Card``, else one device."""
        cards: dict[tuple[str, str], list[AmdDevice]] = {}
        units: list[list[AmdDevice]] = []
        for device in devices:
            shell = u30_shell(device.shell or "", self.settings.u30_common_names)
            if not (self.settings.u30_card_unit and device.shell is not None and is_u30(shell)):
                units.append([device])
            elif not device.serial or device.serial == AWS_SERIAL:
                problems[f"serial:{device.address}"] = (
                    f"{device.what}: a U30 device without a serial number (xmc.u.*/serial_num) cannot be "
                    "grouped with its card: served on its own (AMD's plugin stops scanning every card here)")
                units.append([device])
            else:
                name = self.name(device, device.address, {}) or ""
                group = cards.get((name, device.serial))
                if group is None:
                    group = cards[(name, device.serial)] = []
                    units.append(group)
                group.append(device)
        for group in cards.values():
            group.sort(key=lambda d: d.address)  # the kernel writes fixed-width lowercase hex: text order is numeric
        return units

    def _observed(self, device_id: str, members: list[AmdDevice], problems: dict[str, str]) -> Observed:
        first = members[0]
        nodes = [node for member in members for node in member.nodes]
        device_nodes = tuple(DeviceNode.same_path(f"/dev/{n}", PERMISSIONS) for n in nodes)
        mounts = tuple(Mount(f"/dev/{n}", f"/dev/{n}") for n in nodes) if self.settings.mount_nodes else ()
        info = dict(first.info)
        what = first.what
        if len(members) > 1:
            addresses = ", ".join(m.address for m in members)
            what = f"U30 card {first.serial} ({addresses})"
            info["card"] = addresses
        faults = tuple(f for m in members for f in m.faults)
        numa = tuple(sorted({n for m in members for n in m.numa}))
        kind = "u30" if first.kind == "alveo" and is_u30(first.shell or "") else first.kind
        return Observed(device_id, what, self.name(first, device_id, problems), first.unusable, faults, numa,
                        info, Grant(device_nodes=device_nodes, mounts=mounts), amd(first, kind))
