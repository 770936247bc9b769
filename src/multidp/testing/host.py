"""Running a whole multidp host in-process, for tests and the demo."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from multidp.config.settings import DriverRetry, Settings, Timeouts, split_drivers
from multidp.driver import Simulation
from multidp.host.host import Host
from multidp.plugins.registry import PluginRegistry

CONVERTED: dict[str, type] = {"timeouts": Timeouts, "driver_retry": DriverRetry}


def make_settings(plugin_dir: Path, drivers: Mapping[str, Any] | None = None, **overrides: Any) -> Settings:
    """Settings for a host serving ``plugin_dir``; ``drivers`` is the config file's ``drivers:``.

    ``overrides`` set any other setting by its Python name: ``sysfs_root``, ``dev_root``,
    ``simulate``, ``cdi_dir``, ``timeouts`` and ``driver_retry`` (each a mapping with the config
    file's camelCase keys, or the settings object), ``metrics_address``, ``strict``...
    """
    settings = Settings(plugin_dir=plugin_dir, cdi_dir=plugin_dir / "cdi")
    settings.driver_sections, settings.enabled_by_default = split_drivers(drivers or {}, None)
    for key, value in overrides.items():
        if key in CONVERTED and isinstance(value, Mapping):
            value = msgspec.convert(value, CONVERTED[key])  # camelCase keys, as in the config file
        setattr(settings, key, value)
    return settings


@contextmanager
def running_host(
    plugin_dir: Path,
    plugins: Mapping[str, Any] | None = None,
    drivers: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    installed: bool = False,
    **overrides: Any,
) -> Iterator[Host]:
    """A started :class:`Host` for ``plugin_dir``, stopped on exit.

    ``plugins`` registers plugin objects by driver name (like entry points);
    with ``installed`` the installed entry points are used too, otherwise only
    ``plugins`` run. ``drivers`` is the ``drivers:`` section of a config file.
    Other keyword arguments are host settings by their Python names: ``sysfs_root``,
    ``dev_root``, ``simulate`` (build each driver's simulation), ``cdi_dir``,
    ``timeouts`` and ``driver_retry`` (mappings with the config file's camelCase keys),
    ``metrics_address``, ``strict``.
    """
    settings = make_settings(Path(plugin_dir), drivers, **overrides)
    registry = PluginRegistry(extra=plugins or {})
    if not installed:
        settings.drivers = sorted(plugins or {})
    host = Host(settings, registry, environ=environ or {})
    host.start()
    try:
        yield host
    finally:
        host.stop()


def simulation_of(host: Host, name: str) -> Simulation:
    """The simulation the host built for driver ``name`` (``simulate=True``): inject and clear faults with it.

    KeyError naming the drivers that have one when ``name`` has none.
    """
    simulations = host.factory.simulations
    if name not in simulations:
        raise KeyError(f"driver {name!r} has no simulation (simulated: {', '.join(sorted(simulations)) or 'none'})")
    return simulations[name]
