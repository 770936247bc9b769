"""Asking a driver for its CDI specs and writing them: shared by both front-ends."""

from __future__ import annotations

from multidp.errors import DriverCallError
from multidp.plugins.runner import DriverRunner
from multidp.serving.cdi import CDIRegistry


def publish_driver_specs(runner: DriverRunner, cdi: CDIRegistry, timeout: float) -> None:
    """Call the driver's ``cdi_specs()`` on its threads and write what it gives (or record why not)."""
    try:
        specs = runner.call("CDI specs", runner.driver.cdi_specs, timeout=timeout)
    except DriverCallError as exc:
        cdi.fail(runner.name, str(exc))
        return
    try:
        given = list(specs or ())
    except Exception as exc:  # noqa: BLE001 - not iterable (a number), or the driver's generator raised
        cdi.fail(runner.name, f"driver {runner.name}: cdi_specs() returned an object of type "
                              f"{type(specs).__name__!r}, not a list of CDISpec ({type(exc).__name__}: {exc})")
        return
    cdi.publish(runner.name, given)
