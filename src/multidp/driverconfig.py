"""A driver's own settings: its config section, MULTIDP_<NAME>_<KEY> variables, its type.

``drivers.<name>.enabled`` belongs to the host (the default that node labels
override); every other key of the section is the driver's. A variable
``MULTIDP_<NAME>_<KEY>`` sets a top-level key of the section; its value is read
as a YAML scalar (``3`` is a number, ``true`` a boolean) and the key is matched
to the driver's declared keys ignoring case and underscores, so
``MULTIDP_NVIDIA_MIG_STRATEGY`` sets ``migStrategy``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from multidp.config import split_validation_error
from multidp.errors import ConfigError

HOST_KEYS = ("enabled",)


def declared_keys(config_type: Any) -> list[str]:
    """The top-level keys a config type accepts, as written in the file."""
    if config_type is None:
        return []
    import msgspec.inspect  # only for drivers that declare a type, when a variable is set

    try:
        info = msgspec.inspect.type_info(config_type)
    except (TypeError, ValueError):
        return []
    return [f.encode_name for f in getattr(info, "fields", ())]


def _normalise(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def env_overrides(
    name: str, environ: Mapping[str, str], known_keys: list[str], section: Mapping[str, Any]
) -> dict[str, Any]:
    """Top-level keys set through ``MULTIDP_<NAME>_<KEY>`` variables."""
    prefix = f"MULTIDP_{name.upper().replace('-', '_')}_"
    if not any(var.startswith(prefix) for var in environ):
        return {}
    import yaml  # values are YAML scalars

    by_norm = {_normalise(k): k for k in [*known_keys, *section.keys(), *HOST_KEYS]}
    found: dict[str, Any] = {}
    for var, text in environ.items():
        if not var.startswith(prefix) or var == prefix:
            continue
        raw_key = var[len(prefix):]
        key = by_norm.get(_normalise(raw_key), raw_key.lower())
        try:
            found[key] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(var, f"is not a YAML scalar: {exc}") from exc
        if isinstance(found[key], (dict, list)) and not text.lstrip().startswith(("{", "[")):
            raise ConfigError(var, "must be a single value")
    return found


def driver_section(
    name: str, section: Mapping[str, Any], environ: Mapping[str, str], config_type: Any
) -> tuple[bool, dict[str, Any]]:
    """(enabled, the driver's own keys) with environment variables applied."""
    merged = dict(section)
    prefix = f"MULTIDP_{name.upper().replace('-', '_')}_"
    if any(var.startswith(prefix) for var in environ):
        merged.update(env_overrides(name, environ, declared_keys(config_type), section))
    enabled = merged.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"drivers.{name}.enabled", f"must be true or false, not {enabled!r}")
    return enabled, merged


def convert_section(name: str, section: dict[str, Any], config_type: Any, source: str | None) -> Any:
    """Validate the driver's keys against its declared type (a dict when it has none)."""
    if config_type is None:
        return section
    try:
        return msgspec.convert(section, config_type, str_keys=True)
    except msgspec.ValidationError as exc:
        key, message = split_validation_error(exc, f"drivers.{name}")
        raise ConfigError(key, message, source) from exc
