"""The createContainer hooks NVIDIA's plugin puts in its CDI spec, for the libraries this driver mounts.

NVIDIA's plugin (through nvidia-container-toolkit's CDI library) adds, to the spec-wide edits:
``create-symlinks --link libcuda.so.1::<dir>/libcuda.so`` (plus ``.so`` links that exist on the host, each
to its library's soname),
then ``update-ldcache --folder <dir>`` per library folder, first seen first, so that images whose ld
cache does not list the mounted folders still find the driver. The program is ``nvidiaCTKPath``
(``/usr/bin/nvidia-ctk`` by default): ``nvidia-ctk`` takes the hooks under ``hook``, ``nvidia-cdi-hook``
(or any other name) directly. NVIDIA's ``enable-cuda-compat`` is left out as NVIDIA's plugin leaves it
out (v0.17.1+), and so is ``disable-device-node-modification`` (toolkit v1.18+): a hook the node's
binary does not know makes every GPU container fail to start.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from pathlib import Path

from multidp import CDIHook, Mount

CREATE_CONTAINER = "createContainer"
HOOK_NAMES = ("create-symlinks", "update-ldcache")  # what this spec may hold; CDI_DISABLE_HOOKS leaves them out


def hook_args(path: str, name: str, *args: str) -> list[str]:
    """The argv NVIDIA writes: ``nvidia-ctk hook <name> …`` or ``<program> <name> …``."""
    program = posixpath.basename(path)
    fixed = [program, "hook"] if program == "nvidia-ctk" else [program]
    return [*fixed, name, *args]


def library_folders(mounts: Sequence[Mount]) -> list[str]:
    """The container folders of the mounted libraries (``lib*.so*``), de-duplicated, first seen first."""
    folders = (posixpath.dirname(m.container_path) for m in mounts if _is_library(m.container_path))
    return list(dict.fromkeys(folders))


def _is_library(path: str) -> bool:
    name = posixpath.basename(path)
    return name.startswith("lib") and (name.endswith(".so") or ".so." in name)


def dev_links(mounts: Sequence[Mount], version: str, driver_root: Path) -> list[str]:
    """``<lib>.so`` links, as ``target::link``, that the mounts do not already provide.

    The mounts give each library its versioned name and its soname; NVIDIA also links ``libcuda.so``
    (applications dlopen it by that name) and any ``.so`` name that is a symlink on the host. A link
    points at the soname mount, or at the versioned file where that is the soname.
    """
    names = [posixpath.split(m.container_path) for m in mounts]
    links = []
    for folder, name in names:
        lib = name.removesuffix(f".{version}")
        if lib == name or not lib.endswith(".so"):
            continue  # a soname or a tool
        if lib == "libcuda.so" or (driver_root / folder.lstrip("/") / lib).is_symlink():
            target = next((n for f, n in names if f == folder and n.startswith(f"{lib}.") and n != name), name)
            links.append(f"{target}::{posixpath.join(folder, lib)}")
    return list(dict.fromkeys(links))


def cdi_hooks(hook_path: str, mounts: Sequence[Mount], version: str, driver_root: Path,
              disabled: frozenset[str] = frozenset()) -> list[CDIHook]:
    """The spec-wide hooks for ``mounts``; none when ``hook_path`` is empty (hooks turned off), and none
    named in ``disabled`` (NVIDIA's CDI_DISABLE_HOOKS)."""
    if not hook_path:
        return []
    hooks = []
    links = dev_links(mounts, version, driver_root) if "create-symlinks" not in disabled else []
    if links:
        link_args = [arg for link in links for arg in ("--link", link)]
        hooks.append(CDIHook(CREATE_CONTAINER, hook_path, hook_args(hook_path, "create-symlinks", *link_args)))
    folders = library_folders(mounts) if "update-ldcache" not in disabled else []
    if folders:  # no library folders, no ldconfig run (newer NVIDIA toolkits skip it too)
        folder_args = [arg for folder in folders for arg in ("--folder", folder)]
        hooks.append(CDIHook(CREATE_CONTAINER, hook_path, hook_args(hook_path, "update-ldcache", *folder_args)))
    return hooks
