"""The Network Plumbing WG device-info files the SR-IOV plugin writes at Allocate, which CNIs read.

As network-attachment-definition-client's ``SaveDeviceInfoForDP`` writes them (pkg/utils/cniconfig.go,
called from the SR-IOV plugin's pkg/netdevice/netResourcePool.go): one file per allocated device,
``<dir>/dp/<resource>-<deviceID>-device.json`` with ``/`` in both names replaced by ``-``, mode 0444,
``{"type":"pci","version":"1.1.0","pci":{"pci-address":...,"rdma-device":...}}`` (the RDMA devices of
the PCI function, comma-joined). Each Allocate removes the device's old file first; the files of a
pool's devices are removed when the driver starts serving and when it stops, as the SR-IOV plugin's
resource server does at Start and Stop.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from multidp_rdma.inventory import RdmaDevice

DEFAULT_DIR = "/var/run/k8s.cni.cncf.io/devinfo"
VERSION = "1.1.0"  # DeviceInfoVersion


def file_path(base: Path, resource: str, device_id: str) -> Path:
    return base / "dp" / f"{resource.replace('/', '-')}-{device_id.replace('/', '-')}-device.json"


def content(device: RdmaDevice, all_devices: Iterable[RdmaDevice]) -> bytes | None:
    """The file's bytes as Go's json.Marshal writes them; None for a device without a PCI function."""
    if device.pci is None:
        return None
    pci: dict[str, str] = {"pci-address": device.pci.address}
    names = [d.name for d in all_devices if d.pci is not None and d.pci.address == device.pci.address]
    if names:
        pci["rdma-device"] = ",".join(names)
    return json.dumps({"type": "pci", "version": VERSION, "pci": pci}, separators=(",", ":")).encode()


class DeviceInfoWriter:
    """Writes and removes the files under one folder; a failure is logged, never raised (the files are
    for CNIs that can do without them, and a pod should not fail over one)."""

    def __init__(self, base: Path, log: logging.Logger) -> None:
        self.base = base
        self.log = log

    def store(self, resource: str, members: Sequence[RdmaDevice], all_devices: Sequence[RdmaDevice]) -> None:
        for device in members:
            data = content(device, all_devices)
            if data is None:
                continue
            path = file_path(self.base, resource, device.id)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.unlink(missing_ok=True)
                fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".devinfo-")
                try:
                    os.write(fd, data)
                    os.fchmod(fd, 0o444)
                finally:
                    os.close(fd)
                os.replace(temporary, path)
            except OSError as exc:
                self.log.warning("cannot write the device-info file %s for %s: %s; CNIs that read it will not find "
                                 "it", path, resource, exc.strerror or exc)

    def clean(self, resource: str, device_ids: Iterable[str]) -> None:
        for device_id in device_ids:
            path = file_path(self.base, resource, device_id)
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                self.log.warning("cannot remove the device-info file %s: %s", path, exc.strerror or exc)
