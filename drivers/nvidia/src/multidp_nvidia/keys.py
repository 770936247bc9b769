"""Every flag, variable and config key of NVIDIA's plugin (v0.20.0), and what this driver does with it.

One entry per ``"<kind> <name>"`` (kind: ``key``, ``variable``, ``flag``), as the list taken from
NVIDIA's source in ``tests/nvidia_v0.20.0_keys.txt`` names them; a test fails when that list has
an entry this table lacks, and another when ``docs/drop-in/nvidia.md`` does not show each verdict.
Verdicts: ``honoured`` (works as in NVIDIA's plugin, or as said), ``refused`` (the driver, or
multidp's command line, stops with a message naming it), ``warned`` (NVIDIA's plugin ignores it
too; a warning names it), ``not applicable`` (why is said).
"""

from __future__ import annotations

from typing import NamedTuple


class Verdict(NamedTuple):
    verdict: str
    how: str


HONOURED, REFUSED, WARNED = "honoured", "refused", "warned"
# DisableResourceNamingInConfig (api/config/v1/config.go): NVIDIA discards these; so does multidp in NVIDIA's file.
_EXT = ("NVIDIA v0.20.0 discards it; so does multidp in NVIDIA's file (one warning each); honoured as a multidp "
        "extension only under drivers.nvidia")
_REPLICAS = "NVIDIA's rules: a non-empty list; replicas at least 2 (MPS: at most 48)"

_KEYS: dict[str, Verdict] = {
    "version": Verdict(HONOURED, "v1 or unset; any other value is refused"),
    "flags.migStrategy": Verdict(HONOURED, "none, single, mixed"),
    "flags.failOnInitError": Verdict(HONOURED, "default false (NVIDIA: true); when true, NVML failing at start "
                                               "fails this driver only"),
    "flags.mpsRoot": Verdict(HONOURED, "host folder of NVIDIA's MPS control daemon (default /run/nvidia/mps)"),
    "flags.nvidiaDriverRoot": Verdict(HONOURED, "a plain absolute path"),
    "flags.nvidiaDevRoot": Verdict(HONOURED, "a plain absolute path; default the driver root"),
    "flags.gdrcopyEnabled": Verdict(HONOURED, "NVIDIA_GDRCOPY=enabled in every answer; refused with cdi-*"),
    "flags.gdsEnabled": Verdict(HONOURED, "NVIDIA_GDS=enabled in every answer; refused with cdi-*"),
    "flags.mofedEnabled": Verdict(HONOURED, "NVIDIA_MOFED=enabled in every answer; refused with cdi-*"),
    "flags.useNodeFeatureAPI": Verdict(WARNED, "GPU Feature Discovery's setting"),
    "flags.deviceDiscoveryStrategy": Verdict(HONOURED, "auto and nvml; tegra is refused (NVML only)"),
    "flags.plugin.passDeviceSpecs": Verdict(HONOURED, "device nodes in the answer"),
    "flags.plugin.deviceListStrategy": Verdict(HONOURED, "envvar, volume-mounts, cdi-annotations, cdi-cri"),
    "flags.plugin.deviceIDStrategy": Verdict(HONOURED, "uuid, index"),
    "flags.plugin.cdiAnnotationPrefix": Verdict(HONOURED, "a DNS subdomain and '/'"),
    "flags.plugin.nvidiaCTKPath": Verdict(HONOURED, "the CDI hooks' program; \"\" writes no hooks"),
    "flags.plugin.containerDriverRoot": Verdict(HONOURED, "where the driver root is mounted in this container "
                                                          "(default: the driver root)"),
    "flags.plugin.sharedDevicesAllocationPolicy": Verdict(HONOURED, "distributed / packed pick replicas as "
                                                                    "replicaPolicy spread / pack"),
    **{f"flags.gfd.{k}": Verdict(WARNED, "GPU Feature Discovery's setting")
       for k in ("oneshot", "noTimestamp", "sleepInterval", "outputFile", "machineTypeFile")},
    **{f"resources.{k}[].{f}": Verdict(WARNED, f"{_EXT}: anchored patterns, then NVIDIA's defaults")
       for k in ("gpus", "mig") for f in ("pattern", "name")},
    "imex.channelIDs": Verdict(HONOURED, "[] or [0]: the channel's node, env, mount or CDI device in answers"),
    "imex.required": Verdict(HONOURED, "a missing channel fails the driver; otherwise a warning"),
}
for _section in ("timeSlicing", "mps"):
    _KEYS.update({
        f"sharing.{_section}.renameByDefault": Verdict(HONOURED, "<name>.shared"),
        f"sharing.{_section}.failRequestsGreaterThanOne": Verdict(
            HONOURED, "MPS: true unless set false" if _section == "mps" else "refuses requests above 1 replica"),
        f"sharing.{_section}.resources[].name": Verdict(HONOURED, _REPLICAS),
        f"sharing.{_section}.resources[].replicas": Verdict(HONOURED, _REPLICAS),
    })
_KEYS.update({
    "sharing.timeSlicing.resources[].rename": Verdict(WARNED, f"{_EXT} (renameByDefault still serves "
                                                                "<name>.shared)"),
    "sharing.timeSlicing.resources[].devices": Verdict(WARNED, f"{_EXT}: 'all', a count, or indexes / UUIDs; "
                                                                "checked as NVIDIA checks them either way"),
    "sharing.mps.resources[].rename": Verdict(WARNED, "NVIDIA's plugin and MPS daemon ignore it, in its file or "
                                                      "under drivers.nvidia"),
    "sharing.mps.resources[].devices": Verdict(WARNED, "NVIDIA's plugin and MPS daemon ignore it, in its file or "
                                                       "under drivers.nvidia"),
})

# NVIDIA's variable → the config key it sets (honoured as that key is).
_VARIABLE_KEYS = {
    "MIG_STRATEGY": "flags.migStrategy", "FAIL_ON_INIT_ERROR": "flags.failOnInitError",
    "NVIDIA_DRIVER_ROOT": "flags.nvidiaDriverRoot", "NVIDIA_DEV_ROOT": "flags.nvidiaDevRoot",
    "PASS_DEVICE_SPECS": "flags.plugin.passDeviceSpecs", "DEVICE_LIST_STRATEGY": "flags.plugin.deviceListStrategy",
    "DEVICE_ID_STRATEGY": "flags.plugin.deviceIDStrategy", "GDRCOPY_ENABLED": "flags.gdrcopyEnabled",
    "GDS_ENABLED": "flags.gdsEnabled", "MOFED_ENABLED": "flags.mofedEnabled",
    "CDI_ANNOTATION_PREFIX": "flags.plugin.cdiAnnotationPrefix",
    "NVIDIA_CDI_HOOK_PATH": "flags.plugin.nvidiaCTKPath", "NVIDIA_CTK_PATH": "flags.plugin.nvidiaCTKPath",
    "DRIVER_ROOT_CTR_PATH": "flags.plugin.containerDriverRoot",
    "CONTAINER_DRIVER_ROOT": "flags.plugin.containerDriverRoot", "MPS_ROOT": "flags.mpsRoot",
    "SHARED_DEVICES_ALLOCATION_POLICY": "flags.plugin.sharedDevicesAllocationPolicy",
    "DEVICE_DISCOVERY_STRATEGY": "flags.deviceDiscoveryStrategy", "IMEX_CHANNEL_IDS": "imex.channelIDs",
    "IMEX_REQUIRED": "imex.required",
}
_FIRST = {"NVIDIA_CDI_HOOK_PATH": "NVIDIA_CTK_PATH", "DRIVER_ROOT_CTR_PATH": "CONTAINER_DRIVER_ROOT"}
_VARIABLES: dict[str, Verdict] = {
    var: Verdict(HONOURED, f"as {key}" + (f"; wins over {_FIRST[var]}" if var in _FIRST else ""))
    for var, key in _VARIABLE_KEYS.items()
}
_VARIABLES.update({
    "CONFIG_FILE": Verdict(HONOURED, "as configFile (which wins)"),
    "KUBELET_SOCKET": Verdict(REFUSED, "unless /var/lib/kubelet/device-plugins/kubelet.sock: the host talks to "
                                       "the kubelet; use multidp's --kubelet-socket"),
    "CDI_FEATURE_FLAGS": Verdict(REFUSED, "nvidia-container-toolkit's CDI feature flags: multidp builds the CDI "
                                          "spec itself"),
    "CDI_DISABLE_HOOKS": Verdict(HONOURED, "all, create-symlinks, update-ldcache leave hooks out; other names are "
                                           "warned about (multidp writes no such hook)"),
    "DP_DISABLE_HEALTHCHECKS": Verdict(HONOURED, "adds XIDs to the ignore list; all / xids turns XID checks off"),
    "DP_ENABLE_HEALTHCHECKS": Verdict(HONOURED, "takes XIDs off the ignore list; all empties it"),
})

# NVIDIA's flags → the variable that does the same in the DaemonSet's env.
_FLAG_VARIABLES = {
    "--mig-strategy": "MIG_STRATEGY", "--fail-on-init-error": "FAIL_ON_INIT_ERROR",
    "--driver-root": "NVIDIA_DRIVER_ROOT", "--nvidia-driver-root": "NVIDIA_DRIVER_ROOT",
    "--dev-root": "NVIDIA_DEV_ROOT", "--nvidia-dev-root": "NVIDIA_DEV_ROOT",
    "--pass-device-specs": "PASS_DEVICE_SPECS", "--device-list-strategy": "DEVICE_LIST_STRATEGY",
    "--device-id-strategy": "DEVICE_ID_STRATEGY", "--gdrcopy-enabled": "GDRCOPY_ENABLED",
    "--gds-enabled": "GDS_ENABLED", "--mofed-enabled": "MOFED_ENABLED",
    "--cdi-annotation-prefix": "CDI_ANNOTATION_PREFIX", "--nvidia-cdi-hook-path": "NVIDIA_CDI_HOOK_PATH",
    "--nvidia-ctk-path": "NVIDIA_CDI_HOOK_PATH", "--driver-root-ctr-path": "DRIVER_ROOT_CTR_PATH",
    "--container-driver-root": "DRIVER_ROOT_CTR_PATH", "--mps-root": "MPS_ROOT",
    "--shared-devices-allocation-policy": "SHARED_DEVICES_ALLOCATION_POLICY",
    "--device-discovery-strategy": "DEVICE_DISCOVERY_STRATEGY", "--imex-channel-ids": "IMEX_CHANNEL_IDS",
    "--imex-required": "IMEX_REQUIRED", "--kubelet-socket": "KUBELET_SOCKET", "--config-file": "CONFIG_FILE",
    "--cdi-feature-flags": "CDI_FEATURE_FLAGS", "--cdi-disable-hooks": "CDI_DISABLE_HOOKS",
}
_FLAGS = {flag: Verdict(REFUSED, f"multidp's command line refuses it (unrecognized argument); set {var}")
          for flag, var in _FLAG_VARIABLES.items()}
# multidp's own --kubelet-socket is the host's flag, with the same meaning.
_FLAGS["--kubelet-socket"] = Verdict(HONOURED, "multidp's own --kubelet-socket (MULTIDP_KUBELET_SOCKET)")

TABLE: dict[str, Verdict] = {
    **{f"key {k}": v for k, v in _KEYS.items()},
    **{f"variable {k}": v for k, v in _VARIABLES.items()},
    **{f"flag {k}": v for k, v in _FLAGS.items()},
}


def markdown() -> str:
    """The table as docs/drop-in/nvidia.md shows it."""
    rows = ["| NVIDIA | kind | verdict | how |", "|---|---|---|---|"]
    for entry, (verdict, how) in TABLE.items():
        kind, name = entry.split(" ", 1)
        rows.append(f"| `{name}` | {kind} | {verdict} | {how} |")
    return "\n".join(rows)
