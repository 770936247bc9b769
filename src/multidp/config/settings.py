"""Host settings: command-line flag > MULTIDP_* environment variable > config file.

The config file is YAML. Its host keys are camelCase (``pluginDir``); each
driver's section lives under ``drivers.<name>`` and is validated against the
type the driver declares (see :mod:`multidp.config.sections`). Every error names
the key and what is wrong, and is a :class:`multidp.errors.ConfigError`, as is
every failure to read the file: at start, on SIGHUP and in ``config check`` alike.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from multidp.config.bylabel import CONFIG_BY_LABEL, DRA_DRIVER_NAME, parse_config_by_label
from multidp.config.pause import PAUSE_BY_LABEL, parse_pause_by_label
from multidp.configfiles import parse_yaml, read_small_file
from multidp.errors import ConfigError, split_validation_error

DEFAULT_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
DEFAULT_CDI_DIR = Path("/var/run/cdi")
DEFAULT_DRA_PLUGINS_DIR = Path("/var/lib/kubelet/plugins")  # DRA sockets and checkpoints: <dir>/<DRA driver name>/
DEFAULT_DRA_REGISTRY_DIR = Path("/var/lib/kubelet/plugins_registry")  # the kubelet's plugin watcher
DEFAULT_BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
DEFAULT_POD_RESOURCES_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")  # which devices pods hold

MAX_TIMEOUT_S = 86_400.0  # longer deadlines overflow the platform's time_t in threading waits

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Timeouts(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Deadlines (seconds) for calls into drivers and to the kubelet."""

    create: float = 30.0
    scan: float = 10.0
    allocate: float = 10.0
    preferred_allocation: float = 1.0
    pre_start: float = 25.0
    register: float = 15.0

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if not math.isfinite(value):  # nan <= 0 is False: this check comes first
                raise ValueError(f"timeouts must be finite, {name} is {value}")
            if value <= 0:
                raise ValueError(f"timeouts must be positive, {name} is {value}")
            if value > MAX_TIMEOUT_S:
                raise ValueError(f"timeouts must be at most {MAX_TIMEOUT_S:.0f} s, {name} is {value}")


class DriverRetry(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Delays (seconds) between tries of a driver whose creation failed: ``first``, doubling to ``max``."""

    first: float = 1.0
    max: float = 300.0

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0 or value > MAX_RETRY_DELAY_S:
                raise ValueError(f"driverRetry.{name} must be more than 0 and at most {MAX_RETRY_DELAY_S:.0f} s, "
                                 f"not {value}")
        if self.first > self.max:
            raise ValueError(f"driverRetry.first ({self.first}) must not exceed driverRetry.max ({self.max})")


MAX_RETRY_DELAY_S = 86_400.0


class FileConfig(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """The config file's shape (published by ``multidp config schema``)."""

    plugin_dir: str | None = None
    kubelet_socket: str | None = None
    allow_drivers: list[str] | Literal["all"] | None = None
    strict: bool | None = None
    simulate: bool | None = None
    metrics_address: str | None = None
    probe_address: str | None = None
    lock_wait: float | None = None
    cdi_dir: str | None = None
    dra_plugins_dir: str | None = None
    dra_registry_dir: str | None = None
    pod_resources_socket: str | None = None
    log_format: Literal["text", "json"] | None = None
    log_level: Literal["debug", "info", "warning", "error"] | None = None
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    driver_retry: DriverRetry = msgspec.field(default_factory=DriverRetry)
    drivers: dict[str, Any] = msgspec.field(default_factory=dict)  # each a mapping: checked by split_drivers


class Settings(msgspec.Struct):
    """Everything the host runs with, after precedence was applied."""

    plugin_dir: Path = DEFAULT_PLUGIN_DIR
    kubelet_socket: Path | None = None
    drivers: list[str] | None = None  # None: all installed drivers may run
    strict: bool = False
    simulate: bool = False
    metrics_address: str | None = None
    probe_address: str | None = None  # /healthz and /readyz on their own listener too
    lock_wait: float = 30.0  # seconds start waits for another multidp's plugin-dir lock (the grace period)
    cdi_dir: Path = DEFAULT_CDI_DIR
    dra_plugins_dir: Path = DEFAULT_DRA_PLUGINS_DIR
    dra_registry_dir: Path = DEFAULT_DRA_REGISTRY_DIR
    boot_id_file: Path = DEFAULT_BOOT_ID_FILE  # tests act out a reboot by changing what it says
    pod_resources_socket: Path = DEFAULT_POD_RESOURCES_SOCKET
    log_format: str = "text"
    log_level: str = "info"
    sysfs_root: Path = Path("/sys")
    dev_root: Path = Path("/dev")
    config_path: Path | None = None
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    driver_retry: DriverRetry = msgspec.field(default_factory=DriverRetry)  # read at start; a reload keeps it
    driver_sections: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    enabled_by_default: bool = True  # drivers.default.enabled: for drivers the config does not enable or disable

    def section(self, name: str) -> dict[str, Any]:
        """``drivers.<name>`` as written, with ``drivers.default.enabled`` where it sets no ``enabled``."""
        section = self.driver_sections.get(name, {})
        return section if "enabled" in section or self.enabled_by_default else {"enabled": False, **section}

    @property
    def kubelet_socket_path(self) -> Path:
        return self.kubelet_socket or self.plugin_dir / "kubelet.sock"


def parse_bool(text: str, what: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(what, f"{text!r} is not a boolean (use 1/true/yes/on or 0/false/no/off)")


def parse_driver_list(text: str, what: str) -> list[str] | None:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(what, "is empty (give a comma list of driver names, or 'all')")
    return None if names == ["all"] else names


def parse_address(text: str, what: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(what, f"{text!r} is not host:port (e.g. 0.0.0.0:9400 or :9400)")
    return f"{host or '0.0.0.0'}:{port}"


def read_config_file(path: Path) -> FileConfig:
    source = str(path)
    raw = parse_yaml(read_small_file(path, source), "", source)
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError("", f"the top level must be a mapping, not {type(raw).__name__}", source)
    try:
        return msgspec.convert(raw, FileConfig, str_keys=True)
    except msgspec.ValidationError as exc:
        key, message = split_validation_error(exc)
        raise ConfigError(key, message, source) from exc


def load_settings(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from parsed flags (None = not given), env and file."""
    env = os.environ if environ is None else environ

    def pick(flag: str, var: str, file_value: Any, convert: Any = None) -> Any:
        if flags.get(flag) is not None:
            return flags[flag]
        if var in env and env[var] != "":
            return convert(env[var], var) if convert else env[var]
        return file_value

    config_path = pick("config", "MULTIDP_CONFIG", None)
    file = read_config_file(Path(config_path)) if config_path else FileConfig()
    source = str(config_path) if config_path else None
    drivers_file = file.allow_drivers
    settings = Settings(
        config_path=Path(config_path) if config_path else None,
        plugin_dir=Path(pick("plugin_dir", "MULTIDP_PLUGIN_DIR", file.plugin_dir) or DEFAULT_PLUGIN_DIR),
        kubelet_socket=_opt_path(pick("kubelet_socket", "MULTIDP_KUBELET_SOCKET", file.kubelet_socket)),
        drivers=pick(
            "drivers",
            "MULTIDP_DRIVERS",
            None if drivers_file in (None, "all") else list(drivers_file),
            parse_driver_list,
        ),
        strict=bool(pick("strict", "MULTIDP_STRICT", file.strict, parse_bool)),
        simulate=bool(pick("simulate", "MULTIDP_SIMULATE", file.simulate, parse_bool)),
        metrics_address=pick("metrics_address", "MULTIDP_METRICS_ADDRESS", file.metrics_address),
        probe_address=pick("probe_address", "MULTIDP_PROBE_ADDRESS", file.probe_address),
        lock_wait=_seconds(pick("lock_wait", "MULTIDP_LOCK_WAIT", file.lock_wait, _float), "lockWait", 30.0),
        cdi_dir=Path(pick("cdi_dir", "MULTIDP_CDI_DIR", file.cdi_dir) or DEFAULT_CDI_DIR),
        dra_plugins_dir=Path(pick("dra_plugins_dir", "MULTIDP_DRA_PLUGINS_DIR", file.dra_plugins_dir)
                             or DEFAULT_DRA_PLUGINS_DIR),
        dra_registry_dir=Path(pick("dra_registry_dir", "MULTIDP_DRA_REGISTRY_DIR", file.dra_registry_dir)
                              or DEFAULT_DRA_REGISTRY_DIR),
        boot_id_file=Path(env.get("MULTIDP_BOOT_ID_FILE") or DEFAULT_BOOT_ID_FILE),
        pod_resources_socket=Path(pick("pod_resources_socket", "MULTIDP_POD_RESOURCES_SOCKET",
                                       file.pod_resources_socket) or DEFAULT_POD_RESOURCES_SOCKET),
        log_format=pick("log_format", "MULTIDP_LOG_FORMAT", file.log_format) or "text",
        log_level=pick("log_level", "MULTIDP_LOG_LEVEL", file.log_level) or "info",
        sysfs_root=Path(env.get("MULTIDP_SYSFS_ROOT") or "/sys"),
        dev_root=Path(env.get("MULTIDP_DEV_ROOT") or "/dev"),
        timeouts=file.timeouts,
        driver_retry=file.driver_retry,
    )
    settings.driver_sections, settings.enabled_by_default = split_drivers(file.drivers, source)
    if settings.log_format not in ("text", "json"):
        raise ConfigError("MULTIDP_LOG_FORMAT", f"{settings.log_format!r} is not text or json")
    if settings.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("MULTIDP_LOG_LEVEL", f"{settings.log_level!r} is not debug, info, warning or error")
    if settings.metrics_address is not None:
        settings.metrics_address = parse_address(settings.metrics_address, "metrics address")
    if settings.probe_address is not None:
        settings.probe_address = parse_address(settings.probe_address, "probe address")
    for name, section in settings.driver_sections.items():
        if "enabled" in section and not isinstance(section["enabled"], bool):
            raise ConfigError(f"drivers.{name}.enabled", "must be true or false", source)
        if section.get(CONFIG_BY_LABEL) is not None:  # the host's key: checked here, like enabled
            parse_config_by_label(name, section[CONFIG_BY_LABEL], f"drivers.{name}.{CONFIG_BY_LABEL}", source)
        if section.get(PAUSE_BY_LABEL) is not None:
            parse_pause_by_label(section[PAUSE_BY_LABEL], f"drivers.{name}.{PAUSE_BY_LABEL}", source)
    _check_dra_names(settings.driver_sections, source)
    return settings


def _check_dra_names(sections: Mapping[str, Mapping[str, Any]], source: str | None) -> None:
    """Two drivers under one DRA name would share sockets and a checkpoint, and hand devices out twice."""
    names: dict[str, str] = {}
    for name, section in sorted(sections.items()):
        dra_name = section.get(DRA_DRIVER_NAME) or f"{name}.multidp.io"
        if isinstance(dra_name, str) and dra_name in names:
            raise ConfigError(f"drivers.{name}.{DRA_DRIVER_NAME}", f"{dra_name!r} is driver {names[dra_name]}'s DRA "
                              "driver name too; each driver needs its own", source)
        names[str(dra_name)] = name


DEFAULTS = "default"  # drivers.default: what applies to every driver the file does not name; not a driver


def split_drivers(drivers: Mapping[str, Any], source: str | None) -> tuple[dict[str, dict[str, Any]], bool]:
    """The file's ``drivers:``: each driver's section, and ``drivers.default.enabled`` (true when absent).

    An opt-in node config sets that false, so that a driver added to the image later runs
    only where a label or the config enables it.
    """
    for name, section in drivers.items():
        if section is not None and not isinstance(section, Mapping):
            what = "enabled: true or false" if name == DEFAULTS else "the driver's settings"
            raise ConfigError(f"drivers.{name}", f"must be a mapping ({what}), not {type(section).__name__}", source)
    sections = {name: dict(section or {}) for name, section in drivers.items() if name != DEFAULTS}
    return sections, _enabled_by_default(drivers.get(DEFAULTS) or {}, source)


def _enabled_by_default(section: Mapping[str, Any], source: str | None) -> bool:
    unknown = sorted(set(section) - {"enabled"})
    if unknown:
        raise ConfigError(f"drivers.{DEFAULTS}.{unknown[0]}", "is not a key of drivers.default (it takes only "
                          "enabled; other keys belong to one driver's section)", source)
    enabled = section.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"drivers.{DEFAULTS}.enabled", "must be true or false", source)
    return enabled


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(what, f"{text!r} is not a number of seconds") from None
    return _seconds(value, what, value)


def _seconds(value: float | None, what: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ConfigError(what, f"must be a number of seconds, 0 or more, not {value!r}")
    return float(value)


def _opt_path(value: str | None) -> Path | None:
    return Path(value) if value else None
