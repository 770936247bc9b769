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

from multidp import hookspecs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "multidp"


@dataclass
class PluginInfo:
    """One driver plugin: where it comes from, and whether it loaded."""

    name: str
    distribution: str = ""
    version: str = ""
    entry_point: str = ""
    loaded: bool = False
    error: str = ""

    @property
    def origin(self) -> str:
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
            self.manager.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001 - any import or validation failure
            info.error = f"cannot load: {type(exc).__name__}: {exc}"
            log.error("driver %s (%s) %s", name, info.origin, info.error)
            return info
        try:
            self.manager.check_pending()
            if not self.manager.subset_hook_caller(
                "multidp_create_driver", self._others(name)
            ).get_hookimpls():
                raise pluggy.PluginValidationError(plugin, "it has no multidp_create_driver hook")
        except pluggy.PluginValidationError as exc:
            self.manager.unregister(name=name)
            info.error = f"invalid plugin: {exc}"
            log.error("driver %s (%s) %s", name, info.origin, info.error)
            return info
        info.loaded = True
        return info

    def _others(self, name: str) -> list[Any]:
        return [p for n, p in self.manager.list_name_plugin() if n != name]

    def call(self, name: str, hook: str, **kwargs: Any) -> Any:
        """Call one hook of one plugin only (exceptions reach the caller)."""
        caller = self.manager.subset_hook_caller(hook, self._others(name))
        if not caller.get_hookimpls():
            return None
        return caller(**kwargs)
