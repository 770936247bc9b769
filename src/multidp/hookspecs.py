"""The hooks a multidp driver plugin implements.

A driver plugin is a module (or object) named by an entry point in the group
``multidp``; the entry-point name is the driver's name everywhere (``--drivers``,
node label ``multidp.io/<name>``, config section ``drivers.<name>``). The host
calls each hook of each plugin on its own, so one plugin's failure never reaches
another. Hooks only describe and create objects; the per-request work happens
on the :class:`multidp.driver.Driver` the plugin returns.

Every hook here is documented for driver authors in ``docs/writing-a-driver.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy

from multidp.driver import Driver, DriverContext, Simulation

PROJECT = "multidp"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def multidp_config_type() -> Any:
    """Return the type of this driver's config section, or None for a plain dict.

    Any type msgspec can convert a mapping into works: a ``msgspec.Struct``
    (``forbid_unknown_fields=True`` rejects unknown keys), a dataclass, a
    ``TypedDict``. The host validates ``drivers.<name>`` against it before
    creating the driver, so a bad value is reported with its key, and publishes
    it in ``multidp config schema``.
    """


@hookspec(firstresult=True)
def multidp_simulate(workdir: Path) -> Simulation | None:
    """Build simulated hardware under ``workdir`` for ``--simulate`` and the demo.

    Return a :class:`multidp.driver.Simulation` (with ``sysfs_root`` / ``dev_root``
    pointing into ``workdir`` for a sysfs-based driver), or None when the driver
    cannot simulate. Called before :func:`multidp_create_driver`, which then
    finds it in ``context.simulation``.
    """


@hookspec(firstresult=True)
def multidp_create_driver(context: DriverContext) -> Driver:
    """Create this plugin's driver for this node.

    ``context`` carries the validated config, the sysfs and /dev roots and the
    simulation, if any. Raise :class:`multidp.errors.ConfigError` for a bad
    setting (the key is reported); any other exception marks the driver failed.
    Keep this quick and free of blocking hardware calls where you can: hardware
    discovery belongs in :meth:`Driver.scan`, which runs under a deadline.
    """
    raise NotImplementedError  # a specification: plugins implement it
