"""IMEX channels, as NVIDIA's plugin (v0.20.0, ``internal/imex``, ``internal/plugin/server.go``) injects them.

``imex.channelIDs: [0]`` (``IMEX_CHANNEL_IDS=0``) asks for ``/dev/nvidia-caps-imex-channels/channel0``
in every container that gets a GPU. At start the channel must be a character device under the node's
/dev: if it is not, ``imex.required`` (``IMEX_REQUIRED``) fails the driver, otherwise the channel is
left out with a warning. Answers then carry it per device-list strategy: ``NVIDIA_IMEX_CHANNELS=0``
(envvar), a ``/dev/null`` mount at ``/var/run/nvidia-container-devices/imex/0`` (volume-mounts), the
CDI device ``k8s.device-plugin.nvidia.com/imex-channel=0`` (cdi-*), and its node with passDeviceSpecs.
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
from collections.abc import Sequence
from pathlib import Path

from multidp import CDIDeviceSpec, CDISpec, DeviceNode

CHANNEL_DIR = "/dev/nvidia-caps-imex-channels"
CDI_KIND = "k8s.device-plugin.nvidia.com/imex-channel"
ENV = "NVIDIA_IMEX_CHANNELS"


class ImexChannelMissing(RuntimeError):
    """A required IMEX channel is not on the node."""


def channel_path(channel: str) -> str:
    return f"{CHANNEL_DIR}/channel{channel}"


def _problem(path: Path) -> str:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    return "" if stat.S_ISCHR(mode) else f"{path} is not a character device"


def present_channels(channel_ids: Sequence[int], required: bool, dev_root: Path,
                     log: logging.Logger) -> tuple[str, ...]:
    """The requested channels that exist under ``dev_root`` (the node's /dev as this container sees it)."""
    found = []
    for channel_id in channel_ids:
        channel = str(channel_id)
        problem = _problem(dev_root / channel_path(channel).removeprefix("/dev/"))
        if problem:
            if required:
                raise ImexChannelMissing(f"requested IMEX channel channel{channel} does not exist ({problem}); "
                                         "imex.required (IMEX_REQUIRED) is true")
            log.warning("ignoring requested IMEX channel channel%s (%s)", channel, problem)
            continue
        log.info("selecting IMEX channel channel%s", channel)
        found.append(channel)
    return tuple(found)


def node(channel: str, dev_root: str) -> DeviceNode:
    """The channel's device node; its host path carries nvidiaDevRoot, as GPU nodes do."""
    path = channel_path(channel)
    return DeviceNode(path, posixpath.join(dev_root, path.lstrip("/")), "rw")


def cdi_spec(channels: Sequence[str], dev_root: str) -> CDISpec:
    """The CDI spec of the channels: one device per channel, named by its ID."""
    return CDISpec(CDI_KIND, [CDIDeviceSpec(c, [node(c, dev_root)]) for c in channels])
