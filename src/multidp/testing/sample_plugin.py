"""The sample driver as a plugin module, for tests that load it through a (fake) entry point.

Never declared by multidp itself: a test writes a fake distribution that
points at this module (see :mod:`multidp.testing.dists`), e.g. to run the real
``multidp run`` command in a subprocess.
"""

from __future__ import annotations

from pathlib import Path

from multidp import DRIVER_API_VERSION, Driver, DriverContext, Simulation, hookimpl
from multidp.testing.sample import SamplePlugin

MULTIDP_DRIVER_API = DRIVER_API_VERSION  # shipped with the host: always the host's own version
PLUGIN = SamplePlugin()


@hookimpl
def multidp_config_type() -> type:
    return PLUGIN.multidp_config_type()


@hookimpl
def multidp_simulate(workdir: Path) -> Simulation:
    return PLUGIN.multidp_simulate(workdir)


@hookimpl
def multidp_create_driver(context: DriverContext) -> Driver:
    return PLUGIN.multidp_create_driver(context)
