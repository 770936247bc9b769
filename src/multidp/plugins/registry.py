"""Finding and loading driver plugins, each one in isolation.

Entry points in the group ``multidp`` name the installed drivers. Only the
drivers that may run on this node are imported (memory and start time are won
by not importing the rest). A plugin that fails to import or to validate is
recorded with its name and distribution and never stops the others.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy

from multidp import DRIVER_API_VERSION, __version__, hookspecs
from multidp.config.settings import DEFAULTS

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "multidp"
API_VERSION_ATTRIBUTE = "MULTIDP_DRIVER_API"  # declared by a plugin module (or object)
HOOK_PREFIX = f"{hookspecs.PROJECT}_"
IMPL_MARK = f"{hookspecs.PROJECT}_impl"  # the attribute pluggy's HookimplMarker sets on a marked function


# Stays a dataclass: multidp.testing exports it, so it is public (docs/reference.md).
@dataclass
class PluginInfo:
    """One driver plugin: where it comes from, and whether it loaded."""

    name: str
    distribution: str = ""
    version: str = ""
    entry_point: str = ""
    loaded: bool = False
    error: str = ""
    api_version: tuple[int, int] = (1, 0)  # the driver API it declares it was written for (none: 1.0)

    @property
    def origin(self) -> str:
        """Where the driver comes from, for logs: ``<distribution> <version>``, or "registered in-process"."""
        if self.distribution:
            return f"{self.distribution} {self.version}".strip()
        return "registered in-process"


def _installed_entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            first = found[ep.name].dist
            log.error(
                "driver %r is declared twice (by %s and %s); using the first",
                ep.name,
                first.name if first else "?",
                ep.dist.name if ep.dist else "?",
            )
            continue
        found[ep.name] = ep
    return found


def api_version_problem(plugin: Any) -> str | None:
    """Why this host cannot run ``plugin``'s declared driver API version, or None.

    A plugin declares ``MULTIDP_DRIVER_API = "major.minor"`` (none: "1.0", the
    first version). The host runs a plugin written for its own major version
    and any minor version up to its own.
    """
    declared = getattr(plugin, API_VERSION_ATTRIBUTE, None)
    if declared is None:
        return None
    wanted = _parse_version(declared)
    if wanted is None:
        return (f"{API_VERSION_ATTRIBUTE} = {declared!r} is not a driver API version "
                f"(write \"major.minor\", e.g. \"{DRIVER_API_VERSION}\")")
    offered = OFFERED
    if wanted[0] != offered[0] or wanted[1] > offered[1]:
        return (f"it was written for multidp driver API {declared}, and this multidp "
                f"({__version__}) offers {DRIVER_API_VERSION}: "
                + ("install a multidp that offers it" if wanted > offered else "install a version of the driver "
                   f"written for {offered[0]}.x"))
    return None


def hook_name_problem(plugin: Any) -> str | None:
    """Why a ``multidp_*`` function of ``plugin`` would never be called, or None.

    pluggy registers only functions marked with ``@multidp.hookimpl`` and, for
    those, refuses unknown names; an unmarked function (a forgotten decorator,
    a typo such as ``multidp_simulte``) it ignores without a word.
    """
    for attribute in sorted(a for a in dir(plugin) if a.startswith(HOOK_PREFIX)):
        value = getattr(plugin, attribute, None)
        if value is None or not callable(value) or isinstance(value, type):
            continue
        if attribute not in HOOKS:
            return f"{attribute} is not a multidp hook (the hooks: {', '.join(HOOKS)})"
        if not hasattr(value, IMPL_MARK):
            return f"{attribute} is not marked with @multidp.hookimpl, so the host would never call it"
    return None


def _parse_version(value: Any) -> tuple[int, int] | None:
    if not isinstance(value, str):
        return None
    major, dot, minor = value.partition(".")
    if not (dot and major.isdigit() and minor.isdigit()):
        return None
    return int(major), int(minor)


OFFERED: tuple[int, int] = _parse_version(DRIVER_API_VERSION) or (0, 0)  # DRIVER_API_VERSION is well-formed
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith(HOOK_PREFIX))


class PluginRegistry:
    """A pluggy manager for this host (no global state), plus what was found.

    ``extra`` registers plugins by name without entry points: tests and the demo
    use it for :mod:`multidp.testing`'s driver, which production never sees.
    """

    def __init__(self, extra: Mapping[str, Any] | None = None) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self._entry_points = _installed_entry_points()
        self._extra = dict(extra or {})
        self.plugins: dict[str, PluginInfo] = {}
        for name, ep in self._entry_points.items():
            dist = ep.dist
            if name == DEFAULTS:
                log.error("entry point %r of %s is not loaded: drivers.%s is the config's defaults for every "
                          "driver, so no driver may take that name", name, dist.name if dist else "?", name)
                continue
            self.plugins[name] = PluginInfo(
                name=name,
                distribution=dist.name if dist else "",
                version=dist.version if dist else "",
                entry_point=ep.value,
            )
        for name in self._extra:
            self.plugins[name] = PluginInfo(name=name)

    @property
    def names(self) -> list[str]:
        """Every installed driver's name, sorted."""
        return sorted(self.plugins)

    def load(self, names: Iterable[str]) -> list[PluginInfo]:
        """Import and register the named plugins; return their records."""
        return [self._load_one(name) for name in names]

    def _load_one(self, name: str) -> PluginInfo:
        info = self.plugins[name]
        if info.loaded or info.error:
            return info
        try:
            plugin = self._extra[name] if name in self._extra else self._entry_points[name].load()
        except Exception as exc:  # noqa: BLE001 - any import failure
            return self._refuse(info, f"cannot load: {type(exc).__name__}: {exc}")
        # Before registering: a plugin for a newer API may implement hooks this host does not know.
        problem = api_version_problem(plugin)
        if problem:
            return self._refuse(info, f"cannot load: {problem}")
        info.api_version = _parse_version(getattr(plugin, API_VERSION_ATTRIBUTE, None) or "1.0") or (1, 0)
        problem = hook_name_problem(plugin)
        if problem:
            return self._refuse(info, f"invalid plugin: {problem}")
        try:
            self.manager.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001 - pluggy's validation, or a plugin object that breaks it
            return self._refuse(info, f"cannot load: {type(exc).__name__}: {exc}")
        try:
            self.manager.check_pending()
            if not self.manager.subset_hook_caller(
                "multidp_create_driver", self._others(name)
            ).get_hookimpls():
                raise pluggy.PluginValidationError(plugin, "it has no multidp_create_driver hook")
        except pluggy.PluginValidationError as exc:
            self.manager.unregister(name=name)
            return self._refuse(info, f"invalid plugin: {exc}")
        info.loaded = True
        return info

    @staticmethod
    def _refuse(info: PluginInfo, error: str) -> PluginInfo:
        info.error = error
        log.error("driver %s (%s) %s", info.name, info.origin, error)
        return info

    def _others(self, name: str) -> list[Any]:
        return [p for n, p in self.manager.list_name_plugin() if n != name]

    def call(self, name: str, hook: str, **kwargs: Any) -> Any:
        """Call one hook of one plugin only (exceptions reach the caller)."""
        caller = self.manager.subset_hook_caller(hook, self._others(name))
        if not caller.get_hookimpls():
            return None
        return caller(**kwargs)
