"""Host settings: command-line flag > MULTIDP_* environment variable > config file.

The config file is YAML. Its host keys are camelCase (``pluginDir``); each
driver's section lives under ``drivers.<name>`` and is validated against the
type the driver declares (see :mod:`multidp.config.sections`). Every error names
the key and what is wrong, and is a :class:`multidp.errors.ConfigError`, as is
every failure to read the file: at start, on SIGHUP and in ``config check`` alike.
"""

from __future__ import annotations

import functools
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from multidp.config.bylabel import CONFIG_BY_LABEL, parse_config_by_label
from multidp.errors import ConfigError, split_validation_error

if TYPE_CHECKING:
    import yaml

DEFAULT_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
DEFAULT_CDI_DIR = Path("/var/run/cdi")

MAX_CONFIG_BYTES = 1 << 20  # a ConfigMap holds at most 1 MiB, a host config a few kB (PyYAML: seconds per MiB)
MAX_NESTING = 100  # far deeper than any config; PyYAML's composer recurses and hits Python's limit near 500
MAX_VALUES = 1_000_000  # more than 1 MiB can spell out; only aliases ("billion laughs") expand beyond it
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


class FileConfig(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """The config file's shape (published by ``multidp config schema``)."""

    plugin_dir: str | None = None
    kubelet_socket: str | None = None
    allow_drivers: list[str] | Literal["all"] | None = None
    strict: bool | None = None
    simulate: bool | None = None
    metrics_address: str | None = None
    cdi_dir: str | None = None
    log_format: Literal["text", "json"] | None = None
    log_level: Literal["debug", "info", "warning", "error"] | None = None
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    drivers: dict[str, dict[str, Any] | None] = msgspec.field(default_factory=dict)


@dataclass
class Settings:
    """Everything the host runs with, after precedence was applied."""

    plugin_dir: Path = DEFAULT_PLUGIN_DIR
    kubelet_socket: Path | None = None
    drivers: list[str] | None = None  # None: all installed drivers may run
    strict: bool = False
    simulate: bool = False
    metrics_address: str | None = None
    cdi_dir: Path = DEFAULT_CDI_DIR
    log_format: str = "text"
    log_level: str = "info"
    sysfs_root: Path = Path("/sys")
    dev_root: Path = Path("/dev")
    config_path: Path | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    driver_sections: dict[str, dict[str, Any]] = field(default_factory=dict)

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
    raw = parse_yaml(_read_small_regular_file(path, source), "", source)
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError("", f"the top level must be a mapping, not {type(raw).__name__}", source)
    try:
        return msgspec.convert(raw, FileConfig, str_keys=True)
    except msgspec.ValidationError as exc:
        key, message = split_validation_error(exc)
        raise ConfigError(key, message, source) from exc


def _read_small_regular_file(path: Path, source: str) -> bytes:
    """The file's bytes; a FIFO, a device or a directory is refused before it is read (or even opened)."""
    try:
        _refuse_unless_regular(os.stat(path).st_mode, source)
        # O_NONBLOCK: should a FIFO be swapped in after the stat, opening it cannot block; fstat refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            _refuse_unless_regular(os.fstat(fd).st_mode, source)
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError("", f"cannot read config file: {exc.strerror or exc}", source) from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError("", f"cannot read config file: over the limit of {MAX_CONFIG_BYTES >> 20} MiB", source)
    return data


def _refuse_unless_regular(mode: int, source: str) -> None:
    if not stat.S_ISREG(mode):
        kind = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device"}.get(
            stat.S_IFMT(mode), "a block device or a socket")
        raise ConfigError("", f"cannot read config file: not a regular file ({kind})", source)


def parse_yaml(data: str | bytes, key: str, source: str | None) -> Any:
    """YAML read strictly: any failure is a one-line ConfigError for ``key`` (a variable; '' for a file)."""
    import yaml  # only when there is YAML to read

    try:
        value = yaml.load(data, Loader=_strict_loader())  # a SafeLoader
    except _Refused as exc:
        raise ConfigError(key, str(exc), source) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(key, f"not valid YAML: {_one_line(exc)}", source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"not valid YAML: {' '.join(str(exc).split())}", source) from None
    except RecursionError:  # MAX_NESTING should come first; never let it take the daemon down
        raise ConfigError(key, "not valid YAML: nested too deeply to read", source) from None
    _check_values(value, key, source)
    return value


class _Refused(Exception):  # valid YAML that multidp refuses: nested too deep, or a key given twice
    pass


def _one_line(exc: yaml.MarkedYAMLError) -> str:
    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"

    context = f" ({exc.context} at {at(exc.context_mark)})" if exc.context else ""
    return f"{exc.problem} at {at(exc.problem_mark)}{context}"


@functools.cache
def _strict_loader() -> type[yaml.SafeLoader]:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that bounds nesting and refuses a key given twice (SafeLoader keeps the last)."""

        depth = 0

        def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
            if self.depth >= MAX_NESTING:
                line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
                raise _Refused(f"nested deeper than {MAX_NESTING} levels at line {line}")
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` then a key of its own is an override, not a duplicate
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the base class says so
                if first is not None:
                    raise _Refused(f"key {key!r} is given twice in one mapping, on line {first} and line {line}")
                seen[key] = line
            return super().construct_mapping(node, deep)

    return StrictLoader


def _check_values(value: Any, key: str, source: str | None) -> None:
    """Refuse non-finite numbers, and aliases that expand to a huge or too deep tree (walked without recursion)."""
    stack: list[tuple[Any, str, int]] = [(value, key, 0)]
    count = 0
    while stack:
        item, where, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(key, f"holds more than {MAX_VALUES:,} values once its YAML aliases are expanded",
                              source)
        if depth > MAX_NESTING:
            raise ConfigError(where, f"is nested deeper than {MAX_NESTING} levels (through YAML aliases)", source)
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(where, f"must be a finite number, not {item}", source)
        if isinstance(item, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k), depth + 1) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(item))


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
        cdi_dir=Path(pick("cdi_dir", "MULTIDP_CDI_DIR", file.cdi_dir) or DEFAULT_CDI_DIR),
        log_format=pick("log_format", "MULTIDP_LOG_FORMAT", file.log_format) or "text",
        log_level=pick("log_level", "MULTIDP_LOG_LEVEL", file.log_level) or "info",
        sysfs_root=Path(env.get("MULTIDP_SYSFS_ROOT") or "/sys"),
        dev_root=Path(env.get("MULTIDP_DEV_ROOT") or "/dev"),
        timeouts=file.timeouts,
        driver_sections={k: dict(v or {}) for k, v in file.drivers.items()},
    )
    if settings.log_format not in ("text", "json"):
        raise ConfigError("MULTIDP_LOG_FORMAT", f"{settings.log_format!r} is not text or json")
    if settings.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("MULTIDP_LOG_LEVEL", f"{settings.log_level!r} is not debug, info, warning or error")
    if settings.metrics_address is not None:
        settings.metrics_address = parse_address(settings.metrics_address, "metrics address")
    for name, section in settings.driver_sections.items():
        if "enabled" in section and not isinstance(section["enabled"], bool):
            raise ConfigError(f"drivers.{name}.enabled", "must be true or false", source)
        if section.get(CONFIG_BY_LABEL) is not None:  # the host's key: checked here, like enabled
            parse_config_by_label(name, section[CONFIG_BY_LABEL], f"drivers.{name}.{CONFIG_BY_LABEL}", source)
    return settings


def _opt_path(value: str | None) -> Path | None:
    return Path(value) if value else None
