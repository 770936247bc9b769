"""Creating a driver, or only its config, the way the host does on a node.

Drivers' tests call these instead of building a ``DriverContext`` by hand, so
that what they test is what a node runs: the plugin is loaded and checked
(declared API version, hooks), the section is resolved (per-node config by
label, ``MULTIDP_<NAME>_<KEY>`` variables) and converted to the plugin's config
type, and a simulation is built when asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from multidp.config.settings import Settings
from multidp.driver import Driver
from multidp.plugins.factory import DriverFactory
from multidp.plugins.registry import PluginRegistry


def _factory(plugin: Any, name: str, section: Mapping[str, Any] | None, environ: Mapping[str, str] | None,
             labels: Mapping[str, str] | None, workdir: Path | None = None, **settings: Any) -> DriverFactory:
    configured = Settings(drivers=[name], driver_sections={name: dict(section or {})},
                          **{k: v for k, v in settings.items() if v is not None})
    factory = DriverFactory(configured, PluginRegistry(extra={name: plugin}), dict(environ or {}), workdir)
    factory.labels = None if labels is None else dict(labels)
    factory.load(name)  # PluginLoadError naming what is wrong, as on a node
    return factory


def driver_config(plugin: Any, section: Mapping[str, Any] | None = None, *, name: str = "driver",
                  environ: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
                  source: str | None = None) -> Any:
    """The config object ``plugin``'s driver would get on a node (``ConfigError`` naming the key if bad).

    ``section`` is ``drivers.<name>`` of the config file; ``labels`` are the
    node's labels (for ``configByLabel``); ``source`` names the file in errors.
    """
    factory = _factory(plugin, name, section, environ, labels, config_path=Path(source) if source else None)
    return factory.configured(name)[0]


def create_driver(plugin: Any, section: Mapping[str, Any] | None = None, *, name: str = "driver",
                  sysfs_root: Path | str | None = None, dev_root: Path | str | None = None,
                  environ: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
                  simulate_in: Path | str | None = None) -> Driver:
    """``plugin``'s driver, created as the host creates it on a node.

    ``simulate_in``: build the plugin's simulation first, in ``<simulate_in>/<name>/`` (as
    ``--simulate`` does); its roots then replace ``sysfs_root`` / ``dev_root``.
    The caller closes the driver (``driver.close()``).
    """
    factory = _factory(
        plugin, name, section, environ, labels,
        sysfs_root=Path(sysfs_root) if sysfs_root is not None else None,
        dev_root=Path(dev_root) if dev_root is not None else None,
        simulate=simulate_in is not None,
        workdir=Path(simulate_in) if simulate_in is not None else None,
    )
    return factory.create(name)


def check_config(plugin: Any, section: Mapping[str, Any] | None = None, *, name: str = "driver",
                 environ: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
                 files: Mapping[str, Path | str] | None = None) -> list[str]:
    """What ``multidp config check`` does for one node's view of the section: the driver created with
    ``context.checking`` set, then closed unscanned; returns the warnings it logged on ``context.log``.

    A bad config raises the driver's ``ConfigError``; ``files`` maps paths inside the pod to local
    copies, as ``config check --file POD_PATH=LOCAL_PATH`` does.
    """
    factory = _factory(plugin, name, section, environ, labels)
    factory.files = {inside: Path(local) for inside, local in (files or {}).items()}
    checked = factory.check(name, factory.configured(name)[0])
    if checked.error is not None:
        raise checked.error
    return checked.warnings
