"""Reading the driver's layered settings: the first value set along a path, and the checks
on names and roots that every part of the resolution shares.

``layers`` are objects of NVIDIA's config file shape, highest precedence first
(multidp's section, NVIDIA's variables, NVIDIA's file); see
:mod:`multidp_nvidia.settings`. Every error is a :class:`multidp.ConfigError`
naming the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from multidp import ConfigError, resource_name_problem

KEY = "drivers.nvidia"
RESOURCE_PREFIX = "nvidia.com"


def pick(layers: Sequence[Any], *path: str) -> Any:
    """The first value set along ``path`` in ``layers`` (highest precedence first)."""
    for layer in layers:
        node = layer
        for part in path:
            node = getattr(node, part, None) if node is not None else None
        if node is not None:
            return node
    return None


def qualified(name: str) -> str:
    """NVIDIA's rule: a name without a ``/`` is in ``nvidia.com/``."""
    return name if "/" in name else f"{RESOURCE_PREFIX}/{name}"


def checked_name(name: str, key: str) -> str:
    """``name`` qualified, or a ConfigError naming ``key`` when Kubernetes would refuse it."""
    full = qualified(name)
    problem = resource_name_problem(full)
    if problem:
        raise ConfigError(key, f"resource name {full!r} {problem}")
    return full


def plain_root(path: str, key: str) -> str:
    """``path`` if it is absolute and has no ``.``/``..`` parts, else a ConfigError naming ``key``.

    Roots become host paths in Allocate answers and CDI specs: whoever writes the config
    chooses what GPU containers mount, so only plain absolute paths are taken.
    """
    parts = path.split("/")
    if not path.startswith("/") or any(p in (".", "..") for p in parts) or "\0" in path:
        raise ConfigError(f"{KEY}.{key}", f"{path!r} must be an absolute path without '.' or '..' parts")
    return path
