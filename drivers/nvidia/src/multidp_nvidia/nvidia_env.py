"""NVIDIA's environment variables, read as NVIDIA's plugin (v0.20.0) reads them.

The flag variables (``MIG_STRATEGY``, ``PASS_DEVICE_SPECS``, …) become one
layer of NVIDIA's config file shape; booleans take Go's spellings (1, t, true,
0, f, false, any case). ``DP_DISABLE_HEALTHCHECKS`` / ``DP_ENABLE_HEALTHCHECKS``
adjust the XID ignore list. ``CDI_DISABLE_HOOKS`` leaves hooks out of the CDI spec;
``KUBELET_SOCKET`` (other than the default) and ``CDI_FEATURE_FLAGS`` are refused.
A bad value is a ConfigError naming the variable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from multidp import ConfigError

from multidp_nvidia.config import NvidiaFileConfig

_TRUE, _FALSE = {"1", "t", "true"}, {"0", "f", "false"}


def _go_bool(var: str, text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(var, f"must be true or false, not {text!r}")


def _text(var: str, text: str) -> str:
    return text.strip()


def _raw(var: str, text: str) -> str:
    return text


def _int_list(var: str, text: str) -> list[int]:
    """urfave/cli's IntSlice: a comma list of integers (Go's base prefixes allowed)."""
    try:
        return [int(part.strip(), 0) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(var, f"must be a comma list of integers, not {text!r}") from None


# NVIDIA's variables (cmd/nvidia-device-plugin/main.go, v0.20.0) → (path in its config file, converter).
# Where one flag has two variables, the first one set wins, as urfave/cli reads them.
_ENV: tuple[tuple[tuple[str, ...], tuple[str, ...], Callable[[str, str], Any]], ...] = (
    (("MIG_STRATEGY",), ("flags", "migStrategy"), _text),
    (("FAIL_ON_INIT_ERROR",), ("flags", "failOnInitError"), _go_bool),
    (("NVIDIA_DRIVER_ROOT",), ("flags", "nvidiaDriverRoot"), _raw),
    (("NVIDIA_DEV_ROOT",), ("flags", "nvidiaDevRoot"), _raw),
    (("GDRCOPY_ENABLED",), ("flags", "gdrcopyEnabled"), _go_bool),
    (("GDS_ENABLED",), ("flags", "gdsEnabled"), _go_bool),
    (("MOFED_ENABLED",), ("flags", "mofedEnabled"), _go_bool),
    (("MPS_ROOT",), ("flags", "mpsRoot"), _raw),  # NVIDIA's --mps-root; its chart sets it
    (("DEVICE_DISCOVERY_STRATEGY",), ("flags", "deviceDiscoveryStrategy"), _text),
    (("PASS_DEVICE_SPECS",), ("flags", "plugin", "passDeviceSpecs"), _go_bool),
    (("DEVICE_LIST_STRATEGY",), ("flags", "plugin", "deviceListStrategy"), _raw),
    (("DEVICE_ID_STRATEGY",), ("flags", "plugin", "deviceIDStrategy"), _text),
    (("CDI_ANNOTATION_PREFIX",), ("flags", "plugin", "cdiAnnotationPrefix"), _raw),
    (("DRIVER_ROOT_CTR_PATH", "CONTAINER_DRIVER_ROOT"), ("flags", "plugin", "containerDriverRoot"), _raw),
    (("NVIDIA_CDI_HOOK_PATH", "NVIDIA_CTK_PATH"), ("flags", "plugin", "nvidiaCTKPath"), _raw),
    (("SHARED_DEVICES_ALLOCATION_POLICY",), ("flags", "plugin", "sharedDevicesAllocationPolicy"), _text),
    (("IMEX_CHANNEL_IDS",), ("imex", "channelIDs"), _int_list),
    (("IMEX_REQUIRED",), ("imex", "required"), _go_bool),
)
VARIABLES = tuple(name for names, _, _ in _ENV for name in names)
KUBELET_SOCKET = "/var/lib/kubelet/device-plugins/kubelet.sock"  # NVIDIA's default, and multidp's


def _refusals(environ: Mapping[str, str]) -> None:
    """NVIDIA's variables that only the host, or NVIDIA's own CDI library, could honour."""
    socket = environ.get("KUBELET_SOCKET")
    if socket is not None and socket != KUBELET_SOCKET:
        raise ConfigError("KUBELET_SOCKET", f"{socket!r}: the multidp host, not the nvidia driver, talks to the "
                                            "kubelet; set multidp's --kubelet-socket (MULTIDP_KUBELET_SOCKET) "
                                            "instead and unset KUBELET_SOCKET")
    if environ.get("CDI_FEATURE_FLAGS", "").strip():
        raise ConfigError("CDI_FEATURE_FLAGS", "nvidia-container-toolkit's CDI feature flags are not supported: "
                                               "multidp builds the CDI spec itself; unset CDI_FEATURE_FLAGS")


def disabled_hooks(environ: Mapping[str, str], written: tuple[str, ...]) -> tuple[frozenset[str], list[str]]:
    """CDI_DISABLE_HOOKS: the hooks (of ``written``) the CDI spec leaves out, and warnings."""
    names = {n.strip() for n in environ.get("CDI_DISABLE_HOOKS", "").split(",") if n.strip()}
    if "all" in names:
        return frozenset(written), []
    other = sorted(names - set(written))
    warnings = [f"CDI_DISABLE_HOOKS: {', '.join(other)}: multidp's CDI spec has no such hook (it writes "
                f"{', '.join(written)}); nothing to leave out"] if other else []
    return frozenset(names & set(written)), warnings


def env_layer(environ: Mapping[str, str]) -> NvidiaFileConfig:
    _refusals(environ)
    doc: dict[str, Any] = {}
    used: dict[str, str] = {}  # config path's last part → the variable it came from, for messages
    for names, path, convert in _ENV:
        var = next((n for n in names if n in environ), None)
        text = environ.get(var) if var else None
        if var is None or text is None or text == "":
            continue
        node = doc
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = convert(var, text)
        used[path[-1]] = var
    try:
        return msgspec.convert(doc, NvidiaFileConfig)
    except msgspec.ValidationError as exc:
        # Name the variable, not the config path it maps to.
        text = str(exc)
        var = next((v for part, v in used.items() if part in text), "environment")
        raise ConfigError(var, text.rpartition(" - at ")[0] or text) from exc


def _xid_list(var: str, text: str) -> tuple[bool, set[int]]:
    """(all, XIDs) from NVIDIA's comma list; ``all`` / ``xids`` mean every XID."""
    found: set[int] = set()
    for part in text.lower().split(","):
        part = part.strip()
        if part in ("all", "xids"):
            return True, set()
        if not part:
            continue
        if not part.isdigit():
            raise ConfigError(var, f"{part!r} is not an XID number (a comma list of numbers, or all)")
        found.add(int(part))
    return False, found


def xid_env(ignored: set[int], environ: Mapping[str, str]) -> tuple[set[int], frozenset[int] | None, bool]:
    """(ignored XIDs, the only XIDs watched or None, health checks on) after NVIDIA's variables.

    DP_DISABLE_HEALTHCHECKS adds XIDs to the ignore list, or with ``all`` turns
    XID checks off; DP_ENABLE_HEALTHCHECKS takes XIDs off the list, or with
    ``all`` empties it. With everything disabled, explicitly enabled XIDs are
    still watched (NVIDIA's rule).
    """
    disable_all, more = _xid_list("DP_DISABLE_HEALTHCHECKS", environ.get("DP_DISABLE_HEALTHCHECKS", ""))
    enable_all, fewer = _xid_list("DP_ENABLE_HEALTHCHECKS", environ.get("DP_ENABLE_HEALTHCHECKS", ""))
    if enable_all:
        return set(), None, True
    if disable_all:
        return set(), frozenset(fewer), bool(fewer)
    return (ignored | more) - fewer, None, True
