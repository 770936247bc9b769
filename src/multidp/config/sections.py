"""A driver's own settings: its config section, MULTIDP_<NAME>_<KEY> variables, its type.

``drivers.<name>.enabled`` belongs to the host (the default that node labels
override); every other key of the section is the driver's. A variable
``MULTIDP_<NAME>_<KEY>`` sets a top-level key of the section; its value is read
as a YAML scalar (``3`` is a number, ``true`` a boolean) and the key is matched
to the driver's declared keys ignoring case and underscores, so
``MULTIDP_NVIDIA_MIG_STRATEGY`` sets ``migStrategy``.

``drivers.<name>.configByLabel`` is the host's too: the per-node config a node
label selects is merged over the section first, so that variables still win
(flag > env > file; the per-node configs are part of the file).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from multidp.config.bylabel import (
    CONFIG_BY_LABEL,
    DRA_DRIVER_NAME,
    FRONTEND,
    FRONTENDS,
    HOST_KEYS,
    ConfigByLabel,
    Selection,
    apply,
    is_dra_name,
    parse_config_by_label,
    select,
)
from multidp.config.pause import PAUSE_BY_LABEL, PauseByLabel, parse_pause_by_label
from multidp.configfiles import parse_yaml
from multidp.errors import ConfigError, split_validation_error
from multidp.names import LABEL_PREFIX


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
    name: str, environ: Mapping[str, str], known_keys: list[str], section: Mapping[str, Any],
    variables: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Top-level keys set through ``MULTIDP_<NAME>_<KEY>`` variables (``variables``: key -> variable)."""
    prefix = f"MULTIDP_{name.upper().replace('-', '_')}_"
    if not any(var.startswith(prefix) for var in environ):
        return {}
    by_norm = {_normalise(k): k for k in [*known_keys, *section.keys(), *HOST_KEYS]}
    found: dict[str, Any] = {}
    for var, text in environ.items():
        if not var.startswith(prefix) or var == prefix:
            continue
        raw_key = var[len(prefix):]
        key = by_norm.get(_normalise(raw_key), raw_key.lower())
        if variables is not None:
            variables[key] = var
        # Read as strictly as the file: nesting, duplicate keys and non-finite numbers are refused.
        found[key] = parse_yaml(text, var, None) if text.strip() else ""
        if isinstance(found[key], (dict, list)) and not text.lstrip().startswith(("{", "[")):
            raise ConfigError(var, "must be a single value")
    return found


class Resolved(msgspec.Struct, frozen=True):
    """A driver's settings on this node: the host's keys, and its own keys with everything applied."""

    enabled: bool
    own: dict[str, Any]
    by_label: ConfigByLabel | None = None
    selection: Selection | None = None
    variables: Mapping[str, str] = msgspec.field(default_factory=dict)  # key -> the MULTIDP_<NAME>_<KEY> that set it
    pause: PauseByLabel | None = None
    frontend: str = FRONTENDS[0]  # "device-plugin" or "dra"
    dra_name: str = ""  # the DRA driver name (set when frontend is "dra")


def resolve_section(
    name: str, section: Mapping[str, Any], environ: Mapping[str, str], config_type: Any,
    labels: Mapping[str, str] | None = None, source: str | None = None, running: str | None = None,
) -> Resolved:
    """The section, the per-node config ``labels`` select merged over it, then variables (``running``:
    the per-node config the driver runs with, kept when the label names no config)."""
    by_label, env, variables = _by_label_and_env(name, section, environ, config_type, source)
    selection = select(by_label, labels, running) if by_label else None
    resolved = _compose(name, section, by_label, selection, env, variables)
    label = (labels or {}).get(f"{LABEL_PREFIX}{name}.{FRONTEND}")  # checked by the host (host/nodestate.py)
    return msgspec.structs.replace(resolved, frontend=label) if label in FRONTENDS else resolved


def _by_label_and_env(
    name: str, section: Mapping[str, Any], environ: Mapping[str, str], config_type: Any, source: str | None,
) -> tuple[ConfigByLabel | None, dict[str, Any], dict[str, str]]:
    env: dict[str, Any] = {}
    variables: dict[str, str] = {}
    prefix = f"MULTIDP_{name.upper().replace('-', '_')}_"
    if any(var.startswith(prefix) for var in environ):
        env = env_overrides(name, environ, declared_keys(config_type), section, variables)
    if CONFIG_BY_LABEL in env:  # a variable replaces the file's configByLabel as a whole
        by_label = parse_config_by_label(name, env.pop(CONFIG_BY_LABEL), variables[CONFIG_BY_LABEL])
        return by_label, env, variables
    if section.get(CONFIG_BY_LABEL) is not None:
        where = f"drivers.{name}.{CONFIG_BY_LABEL}"
        return parse_config_by_label(name, section[CONFIG_BY_LABEL], where, source), env, variables
    return None, env, variables


def _compose(name: str, section: Mapping[str, Any], by_label: ConfigByLabel | None, selection: Selection | None,
             env: Mapping[str, Any], variables: Mapping[str, str]) -> Resolved:
    merged = apply(section, by_label, selection.chosen if selection else None)
    merged.update(env)
    enabled = merged.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"drivers.{name}.enabled", f"must be true or false, not {enabled!r}")
    raw_pause = env.get(PAUSE_BY_LABEL, section.get(PAUSE_BY_LABEL))
    merged.pop(PAUSE_BY_LABEL, None)
    where = variables.get(PAUSE_BY_LABEL) or f"drivers.{name}.{PAUSE_BY_LABEL}"
    pause = parse_pause_by_label(raw_pause, where) if raw_pause is not None else None
    frontend, dra_name = _frontend(name, merged, variables)
    return Resolved(enabled, merged, by_label, selection, variables, pause, frontend, dra_name)


def _frontend(name: str, merged: dict[str, Any], variables: Mapping[str, str]) -> tuple[str, str]:
    """``frontend`` and ``draDriverName`` taken out of the section and checked (the host's keys)."""
    frontend = merged.pop(FRONTEND, FRONTENDS[0])
    if frontend not in FRONTENDS:
        where = variables.get(FRONTEND) or f"drivers.{name}.{FRONTEND}"
        raise ConfigError(where, f"must be one of {', '.join(FRONTENDS)}, not {frontend!r}")
    given = merged.pop(DRA_DRIVER_NAME, None)
    dra_name = f"{name}.multidp.io" if given is None else given
    if not is_dra_name(dra_name) and (given is not None or frontend == "dra"):
        where = variables.get(DRA_DRIVER_NAME) or f"drivers.{name}.{DRA_DRIVER_NAME}"
        what = f"{dra_name!r}" if given is not None else f"the default {dra_name!r} (from the driver's name)"
        raise ConfigError(where, f"{what} is not a DRA driver name (a DNS subdomain of at most 63 characters: "
                                 "lower-case letters, digits, '-' and '.', e.g. gpu.example.com)")
    return frontend, dra_name


class Variant(msgspec.Struct, frozen=True):
    """The section as some node sees it: alone (``chosen`` None) or with one per-node config."""

    chosen: str | None
    enabled: bool
    config: Any

    def where(self) -> str:
        return f"with the per-node config {self.chosen!r}" if self.chosen is not None else "alone"


def section_variants(
    name: str, section: Mapping[str, Any], environ: Mapping[str, str], config_type: Any, source: str | None,
) -> list[Variant]:
    """Validate the section as every node can see it: alone, and with each per-node config."""
    by_label, env, variables = _by_label_and_env(name, section, environ, config_type, source)
    resolved = _compose(name, section, by_label, None, env, variables)
    variants = [Variant(None, resolved.enabled, convert_resolved(name, resolved, config_type, source))]
    if by_label is None:
        return variants
    for chosen in by_label.configs:
        selection = Selection(by_label.label, chosen, chosen, tuple(by_label.configs))
        resolved = _compose(name, section, by_label, selection, env, variables)
        variants.append(Variant(chosen, resolved.enabled, convert_resolved(name, resolved, config_type, source)))
    return variants


def convert_resolved(name: str, resolved: Resolved, config_type: Any, source: str | None) -> Any:
    """The driver's config object; an error in a key the per-node config sets names that config's key."""
    chosen = resolved.selection.chosen if resolved.selection else None
    try:
        return convert_section(name, resolved.own, config_type, source)
    except ConfigError as exc:
        variable = _set_in(exc, name, resolved.variables)
        if variable is not None:  # the variable's value is what is wrong: name the variable
            var = resolved.variables[variable]
            raise ConfigError(var, f"{exc.message} (sets drivers.{name}.{variable})") from exc
        if resolved.by_label is None or chosen is None:
            raise
        raise in_config(exc, name, chosen, resolved.by_label.configs[chosen]) from exc


def _set_in(exc: ConfigError, name: str, keys: Mapping[str, Any]) -> str | None:
    """The top-level key among ``keys`` that the error is in (for an unknown field: that names it), or None."""
    prefix = f"drivers.{name}"
    rest = exc.key[len(prefix):].lstrip(".") if exc.key.startswith(prefix) else ""
    top = re.split(r"[.\[]", rest, maxsplit=1)[0]
    if top:
        return top if top in keys else None
    return next((key for key in keys if f"`{key}`" in exc.message), None)


def in_config(exc: ConfigError, name: str, chosen: str, overlay: Mapping[str, Any]) -> ConfigError:
    """Name the per-node config's key when the error is in a key it sets."""
    prefix = f"drivers.{name}"
    rest = exc.key[len(prefix):].lstrip(".") if exc.key.startswith(prefix) else ""
    if _set_in(exc, name, overlay) is not None:
        key = f"{prefix}.{CONFIG_BY_LABEL}.configs.{chosen}" + (f".{rest}" if rest else "")
        return ConfigError(key, exc.message, exc.source)
    return ConfigError(exc.key, f"{exc.message} (with the per-node config {chosen!r})", exc.source)


def driver_section(
    name: str, section: Mapping[str, Any], environ: Mapping[str, str], config_type: Any,
) -> tuple[bool, dict[str, Any]]:
    """(enabled, the driver's own keys) with the per-node config and environment variables applied."""
    resolved = resolve_section(name, section, environ, config_type)
    return resolved.enabled, resolved.own


def convert_section(name: str, section: dict[str, Any], config_type: Any, source: str | None) -> Any:
    """Validate the driver's keys against its declared type (a dict when it has none)."""
    if config_type is None:
        return section
    try:
        return msgspec.convert(section, config_type, str_keys=True)
    except msgspec.ValidationError as exc:
        key, message = split_validation_error(exc, f"drivers.{name}")
        raise ConfigError(key, message, source) from exc
