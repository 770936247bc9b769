"""NVIDIA v0.20.0's newer flags and keys, checked as its ``validateFlags`` (cmd/nvidia-device-plugin/main.go)
checks them, or refused where multidp cannot do what NVIDIA does.

- ``flags.deviceDiscoveryStrategy`` (``DEVICE_DISCOVERY_STRATEGY``): ``auto`` and ``nvml`` are what
  this driver does; ``tegra`` (Jetson / iGPU boards, no NVML) is refused.
- ``flags.plugin.sharedDevicesAllocationPolicy`` (``SHARED_DEVICES_ALLOCATION_POLICY``):
  ``distributed`` / ``packed`` pick replicas as multidp's ``replicaPolicy`` ``spread`` / ``pack``;
  ``replicaPolicy``, when set, wins.
- ``imex.channelIDs`` (``IMEX_CHANNEL_IDS``): ``[]`` or ``[0]``; ``imex.required`` (``IMEX_REQUIRED``).
- ``flags.gdrcopyEnabled`` (``GDRCOPY_ENABLED``): ``NVIDIA_GDRCOPY=enabled`` in every answer. With a CDI
  strategy NVIDIA adds toolkit-built ``gds`` / ``mofed`` / ``gdrcopy`` CDI devices that multidp does not
  build, so those three are refused together with ``cdi-*``.
- ``flags.gfd.*`` and ``flags.useNodeFeatureAPI`` belong to GPU Feature Discovery: NVIDIA's plugin
  ignores them, and so does this driver, with a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from multidp import ConfigError

from multidp_nvidia.config import NvidiaConfig
from multidp_nvidia.layering import KEY, pick

POLICIES = {"distributed": "spread", "packed": "pack"}


class FlagSettings(msgspec.Struct, frozen=True):
    replica_policy: str
    gdrcopy: bool
    imex_channels: tuple[int, ...]
    imex_required: bool
    warnings: tuple[str, ...]


def checked_flags(layers: Sequence[Any], config: NvidiaConfig, uses_cdi: bool) -> FlagSettings:
    warnings = []
    discovery = pick(layers, "flags", "device_discovery_strategy") or "auto"
    if discovery == "tegra":
        raise ConfigError(f"{KEY}.flags.deviceDiscoveryStrategy", "tegra is not supported: multidp finds GPUs "
                                                                  "through NVML only (auto or nvml)")
    if discovery not in ("auto", "nvml"):
        raise ConfigError(f"{KEY}.flags.deviceDiscoveryStrategy",
                          f"invalid option {discovery!r} (auto or nvml; NVIDIA's tegra is not supported)")
    policy = pick(layers, "flags", "plugin", "shared_devices_allocation_policy")
    if policy is not None and policy not in POLICIES:
        raise ConfigError(f"{KEY}.flags.plugin.sharedDevicesAllocationPolicy",
                          f"invalid option {policy!r} (distributed or packed)")
    replica_policy = config.replica_policy or POLICIES.get(policy or "distributed", "spread")
    channels = pick(layers, "imex", "channel_ids") or []
    if channels not in ([], [0]):
        raise ConfigError(f"{KEY}.imex.channelIDs", f"channelIDs must be [] or [0]; found {channels}")
    gdrcopy = bool(pick(layers, "flags", "gdrcopy_enabled"))
    if uses_cdi:
        extras = [k for k, path in (("gdsEnabled", "gds_enabled"), ("mofedEnabled", "mofed_enabled"),
                                    ("gdrcopyEnabled", "gdrcopy_enabled")) if pick(layers, "flags", path)]
        if extras:
            raise ConfigError(f"{KEY}.flags.{extras[0]}", "is not supported with a cdi-* deviceListStrategy: "
                                                          "NVIDIA then adds CDI devices built by its toolkit, "
                                                          "which multidp does not build; use envvar")
    for key, path in (("flags.gfd", ("flags", "gfd")), ("flags.useNodeFeatureAPI", ("flags", "use_node_feature_api"))):
        if pick(layers, *path) is not None:
            warnings.append(f"{key} is ignored: it is GPU Feature Discovery's setting, which NVIDIA's device "
                            "plugin ignores too")
    return FlagSettings(replica_policy, gdrcopy, tuple(channels), bool(pick(layers, "imex", "required")),
                        tuple(warnings))
