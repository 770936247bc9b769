"""Bringing drivers up: select, load, configure, simulate, create — each in isolation.

Every step that runs a plugin's code is guarded: a failure marks that driver
failed, with its name, distribution and reason (log line, ``multidp drivers``),
and the other drivers carry on. The caller decides whether a failure is fatal
(``--strict``). Plugin code (import, hooks) runs on a helper thread under the
``timeouts.create`` deadline, so that whatever it raises, ``SystemExit`` and
``KeyboardInterrupt`` included, reaches the caller as an ordinary exception
(:class:`~multidp.plugins.calls.DriverAborted`), and a caller's own Ctrl-C is
still its own.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from multidp.config.bylabel import Selection
from multidp.config.sections import Resolved, convert_resolved, resolve_section
from multidp.config.settings import Settings
from multidp.driver import Driver, DriverContext, Simulation
from multidp.errors import ConfigError, PluginLoadError
from multidp.plugins.calls import DriverAborted, describe_exception, with_deadline
from multidp.plugins.creation import Creations
from multidp.plugins.registry import PluginInfo, PluginRegistry

log = logging.getLogger(__name__)


RUNNING, FAILED, DISABLED, NOT_SELECTED = "running", "failed", "disabled", "not selected"


class DriverStatus(msgspec.Struct):
    """What happened to one installed driver on this node."""

    name: str
    origin: str
    state: str
    reason: str = ""


class Created(msgspec.Struct, frozen=True):
    driver: Driver
    selection: Selection | None  # the per-node config the labels selected (None: no configByLabel)
    frontend: str = "device-plugin"
    dra_name: str = ""


class Checked(msgspec.Struct, frozen=True):
    """A driver created in checking mode: what it warned about, what it raised (None: nothing)."""

    warnings: list[str]
    error: Exception | None
    created: bool = True  # False: written for a driver API without checking mode, so not created


CHECKING_SINCE = (1, 1)  # the driver API version that brought DriverContext.checking
DRA_SINCE = (1, 3)  # the driver API version that brought DriverContext.frontend (DRA mode)


class UnknownDrivers(ValueError):
    """``--drivers`` names drivers that are not installed."""


def selected_names(settings: Settings, registry: PluginRegistry) -> list[str]:
    """The drivers that may run (``--drivers``), checked against what is installed."""
    if settings.drivers is None:
        return registry.names
    unknown = [n for n in settings.drivers if n not in registry.plugins]
    if unknown:
        installed = ", ".join(registry.names) or "none"
        raise UnknownDrivers(f"unknown driver(s): {', '.join(unknown)} (installed: {installed})")
    return list(dict.fromkeys(settings.drivers))


class DriverFactory:
    """Creates drivers from plugins for one host (or one `multidp devices` run)."""

    def __init__(self, settings: Settings, registry: PluginRegistry, environ: Mapping[str, str] | None = None,
                 workdir: Path | None = None, creations: Creations | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.environ = os.environ if environ is None else environ
        self._workdir = workdir
        self._own_workdir: tempfile.TemporaryDirectory[str] | None = None
        self._workdir_lock = threading.Lock()
        self.simulations: dict[str, Simulation] = {}
        self.labels: Mapping[str, str] | None = None  # this node's labels; None: not known (the defaults apply)
        self.files: Mapping[str, Path] = {}  # `config check --file POD=LOCAL`: where drivers read pod-only files
        self.running_configs: Mapping[str, str] = {}  # driver -> its running per-node config ('': none)
        self.creations = creations or Creations()  # shared with successors: a hung creation outlives a reload

    def info(self, name: str) -> PluginInfo:
        return self.registry.plugins[name]

    def enabled(self, name: str) -> bool:
        """Whether config enables the driver on this node (the default that labels override)."""
        return self.resolved(name).enabled

    def resolved(self, name: str) -> Resolved:
        """:meth:`resolve` with the plugin's config type once it is loaded (its variables matched to it)."""
        return self.resolve(name, self.config_type(name) if self.info(name).loaded else None)

    def resolve(self, name: str, config_type: Any = None) -> Resolved:
        """The driver's section on this node: the per-node config its labels select, then variables."""
        section = self.settings.section(name)
        return resolve_section(name, section, self.environ, config_type, self.labels, self.source,
                               self.running_configs.get(name))

    @property
    def source(self) -> str | None:
        return str(self.settings.config_path) if self.settings.config_path else None

    def config_type(self, name: str) -> Any:
        """The type the plugin declares for its config section (its ``multidp_config_type`` hook)."""
        return self._hook(name, "multidp_config_type")

    def _hook(self, name: str, hook: str, **kwargs: Any) -> Any:
        return with_deadline(f"driver {name}: {hook}", self.settings.timeouts.create,
                             lambda: self.registry.call(name, hook, **kwargs))

    def load(self, name: str) -> PluginInfo:
        """Import and register the driver's plugin; PluginLoadError (``cannot load: ...``) if that fails."""
        try:
            info: PluginInfo = with_deadline(f"driver {name}: importing it", self.settings.timeouts.create,
                                             lambda: self.registry.load([name])[0])
        except (DriverAborted, TimeoutError) as exc:  # what the registry cannot catch on its own
            raise PluginLoadError(f"cannot load: {describe_exception(exc)}") from exc
        if not info.loaded:
            raise PluginLoadError(info.error)
        return info

    def configured(self, name: str) -> tuple[Any, Resolved]:
        """The loaded driver's config object on this node, and the resolved section it was made from."""
        config_type = self.config_type(name)
        resolved = self.resolve(name, config_type)
        return convert_resolved(name, resolved, config_type, self.source), resolved

    def create(self, name: str) -> Driver:
        """Load, configure and create one driver; raise with a clear reason on failure."""
        return self.create_selected(name).driver

    def create_selected(self, name: str) -> Created:
        """:meth:`create`, also saying which per-node config the node's labels selected for it."""
        self.load(name)
        config, resolved = self.configured(name)
        self._check_frontend(name, resolved.frontend)
        simulation = self._simulate(name) if self.settings.simulate else None
        context = DriverContext(
            name=name,
            config=config,
            sysfs_root=(simulation.sysfs_root if simulation and simulation.sysfs_root else self.settings.sysfs_root),
            dev_root=(simulation.dev_root if simulation and simulation.dev_root else self.settings.dev_root),
            simulation=simulation,
            environ=self.environ,
            log=logging.getLogger(f"multidp.driver.{name}"),
            files=self.files,
            frontend=resolved.frontend,
        )
        return Created(self._create(context), resolved.selection, resolved.frontend, resolved.dra_name)

    def _check_frontend(self, name: str, frontend: str) -> None:
        """A driver written before DRA mode cannot be served through it: say so, naming the key."""
        version = self.info(name).api_version
        if frontend == "dra" and version < DRA_SINCE:
            raise ConfigError(f"drivers.{name}.frontend",
                              f"dra needs a driver written for driver API {DRA_SINCE[0]}.{DRA_SINCE[1]} or later "
                              f"(complete CDI answers); driver {name} declares {version[0]}.{version[1]}")

    def check(self, name: str, config: Any) -> Checked:
        """Create the loaded driver only to validate ``config`` (``context.checking``), then close it.

        Returns what creating it raised (a ConfigError names the key and file), if anything,
        and the warnings the driver logged on ``context.log`` meanwhile, which a node would
        log too. A driver written for API 1.0 predates checking mode: it is not created.
        """
        if self.info(name).api_version < CHECKING_SINCE:
            return Checked([], None, created=False)
        driver_log = logging.getLogger(f"multidp.driver.{name}")
        warnings, propagate, level = _Collect(), driver_log.propagate, driver_log.level
        driver_log.addHandler(warnings)
        driver_log.propagate = False  # the command prints them, once
        driver_log.setLevel(logging.WARNING)  # collected whatever the caller's logging says
        try:
            frontend = self.resolved(name).frontend
            self._check_frontend(name, frontend)
            context = DriverContext(name=name, config=config, sysfs_root=self.settings.sysfs_root,
                                    dev_root=self.settings.dev_root, environ=self.environ, log=driver_log,
                                    checking=True, files=self.files, frontend=frontend)
            driver = self._create(context)
            with_deadline(f"driver {name}: close", self.settings.timeouts.create, driver.close)
        except Exception as exc:  # noqa: BLE001 - the caller reports it, with the warnings before it
            return Checked(warnings.messages, exc)
        finally:
            driver_log.removeHandler(warnings)
            driver_log.propagate = propagate
            driver_log.setLevel(level)
        return Checked(warnings.messages, None)

    def _create(self, context: DriverContext) -> Driver:
        name = context.name
        driver = self.creations.create(name, self.settings.timeouts.create,
                                       lambda: self.registry.call(name, "multidp_create_driver", context=context))
        if not isinstance(driver, Driver):
            raise TypeError(f"multidp_create_driver returned {type(driver).__name__}, not a multidp Driver")
        return driver

    def _simulate(self, name: str) -> Simulation | None:
        workdir = self.workdir / name
        workdir.mkdir(parents=True, exist_ok=True)
        simulation: Simulation | None = self._hook(name, "multidp_simulate", workdir=workdir)
        if simulation is None:
            log.warning("driver %s cannot simulate hardware; it runs against the real node", name)
        else:
            self.simulations[name] = simulation
            # Said, so that an operator or a vendor can change the simulated files of a running daemon.
            log.info("driver %s: simulated hardware in %s", name, workdir)
        return simulation

    @property
    def workdir(self) -> Path:
        # Drivers come up in parallel. Unlocked, two could each make a folder, and the one
        # dropped was deleted by its finalizer under the tree a driver was still building there.
        with self._workdir_lock:
            if self._workdir is None:
                self._own_workdir = tempfile.TemporaryDirectory(prefix="multidp-sim-")
                self._workdir = Path(self._own_workdir.name)
            return self._workdir

    def successor(self, settings: Settings) -> DriverFactory:
        """The factory a reload uses: same plugins and environment, and this one's simulation folder,
        which it now owns (dropped with this factory, the folder would go under running drivers)."""
        successor = DriverFactory(settings, self.registry, self.environ, self._workdir, self.creations)
        with self._workdir_lock:
            successor._own_workdir, self._own_workdir = self._own_workdir, None
        return successor

    def cleanup(self) -> None:
        if self._own_workdir is not None:
            self._own_workdir.cleanup()
            self._own_workdir = None


class _Collect(logging.Handler):
    """The warnings (and worse) a driver logs while it is checked."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, ConfigError):
        return f"bad config: {exc}"
    if isinstance(exc, PluginLoadError):
        return str(exc)  # already says what failed: "cannot load: ...", "invalid plugin: ..."
    return describe_exception(exc)
