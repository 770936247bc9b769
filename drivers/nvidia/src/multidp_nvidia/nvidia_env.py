"""NVIDIA's environment variables, read as NVIDIA's plugin reads them.

The flag variables (``MIG_STRATEGY``, ``PASS_DEVICE_SPECS``, …) become one
layer of NVIDIA's config file shape; booleans take Go's spellings (1, t, true,
0, f, false, any case). ``DP_DISABLE_HEALTHCHECKS`` / ``DP_ENABLE_HEALTHCHECKS``
adjust the XID ignore list. A bad value is a ConfigError naming the variable.
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


# NVIDIA's variable → (path in its config file, converter).
_ENV: dict[str, tuple[tuple[str, ...], Callable[[str, str], Any]]] = {
    "MIG_STRATEGY": (("flags", "migStrategy"), lambda v, t: t.strip()),
    "FAIL_ON_INIT_ERROR": (("flags", "failOnInitError"), _go_bool),
    "NVIDIA_DRIVER_ROOT": (("flags", "nvidiaDriverRoot"), lambda v, t: t),
    "NVIDIA_DEV_ROOT": (("flags", "nvidiaDevRoot"), lambda v, t: t),
    "GDS_ENABLED": (("flags", "gdsEnabled"), _go_bool),
    "MOFED_ENABLED": (("flags", "mofedEnabled"), _go_bool),
    "PASS_DEVICE_SPECS": (("flags", "plugin", "passDeviceSpecs"), _go_bool),
    "DEVICE_LIST_STRATEGY": (("flags", "plugin", "deviceListStrategy"), lambda v, t: t),
    "DEVICE_ID_STRATEGY": (("flags", "plugin", "deviceIDStrategy"), lambda v, t: t.strip()),
    "CDI_ANNOTATION_PREFIX": (("flags", "plugin", "cdiAnnotationPrefix"), lambda v, t: t),
    "CONTAINER_DRIVER_ROOT": (("flags", "plugin", "containerDriverRoot"), lambda v, t: t),
    "MPS_ROOT": (("flags", "mpsRoot"), lambda v, t: t),  # NVIDIA's --mps-root; its chart sets it
    # NVIDIA's flag --nvidia-cdi-hook-path reads NVIDIA_CDI_HOOK_PATH before NVIDIA_CTK_PATH: the later
    # entry here wins, so it comes second.
    "NVIDIA_CTK_PATH": (("flags", "plugin", "nvidiaCTKPath"), lambda v, t: t),
    "NVIDIA_CDI_HOOK_PATH": (("flags", "plugin", "nvidiaCTKPath"), lambda v, t: t),
}


def env_layer(environ: Mapping[str, str]) -> NvidiaFileConfig:
    doc: dict[str, Any] = {}
    for var, (path, convert) in _ENV.items():
        text = environ.get(var)
        if text is None or text == "":
            continue
        node = doc
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = convert(var, text)
    try:
        return msgspec.convert(doc, NvidiaFileConfig)
    except msgspec.ValidationError as exc:
        # Name the variable, not the config path it maps to.
        text = str(exc)
        var = next((v for v, (p, _) in _ENV.items() if environ.get(v) and p[-1] in text), "environment")
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
