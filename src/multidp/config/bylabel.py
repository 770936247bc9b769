"""Per-node driver config chosen by a node label, for any driver (``drivers.<name>.configByLabel``).

NVIDIA's plugin picks a config per node from ``nvidia.com/device-plugin.config``
through a sidecar; here the host does it for every driver. The section names a
label and a set of named configs; the config the node's label names is merged
over the driver's section (mappings key by key, other values replaced, ``null``
removes a key, as Helm merges values). No label: ``default``, else a config
named ``default`` (NVIDIA's "named" fallback), else the section alone. A label
naming no config: one error line, and the section alone (see the operator guide).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from multidp.errors import ConfigError
from multidp.names import DNS1123_SUBDOMAIN, LABEL_PREFIX, QUALIFIED_NAME_PART

CONFIG_BY_LABEL = "configByLabel"
FRONTENDS = ("device-plugin", "dra")
DRA_NAME_MAX = 63  # a DRA driver name is a DNS subdomain of at most 63 characters (resource.k8s.io/v1)


def is_dra_name(name: object) -> bool:
    """Whether ``name`` can be a DRA driver name."""
    return isinstance(name, str) and len(name) <= DRA_NAME_MAX and DNS1123_SUBDOMAIN.fullmatch(name) is not None
NAMED_FALLBACK = "default"

_KEYS = ("label", "annotation", "default", "configs")
# The host hands node annotations to selection beside the labels, under keys no label can have
# (a label key holds no '@'), so one mapping carries both (host/labels.py).
ANNOTATION_PREFIX = "@annotation:"
FRONTEND, DRA_DRIVER_NAME = "frontend", "draDriverName"
HOST_KEYS = ("enabled", CONFIG_BY_LABEL, "pauseByLabel", FRONTEND, DRA_DRIVER_NAME)  # the host's: not per node


class ConfigByLabel(msgspec.Struct, frozen=True):
    label: str  # the key of the node label, or of the node annotation when ``kind`` is "annotation"
    configs: dict[str, dict[str, Any]]
    default: str | None = None
    kind: str = "label"

    def value_in(self, labels: Mapping[str, str]) -> str | None:
        """This node's value of the label (or annotation); an empty value is no value, as NVIDIA reads it."""
        key = ANNOTATION_PREFIX + self.label if self.kind == "annotation" else self.label
        return labels.get(key) or None

    @property
    def fallback(self) -> str | None:
        """The config for a node without the label."""
        if self.default is not None:
            return self.default
        return NAMED_FALLBACK if NAMED_FALLBACK in self.configs else None


class Selection(msgspec.Struct, frozen=True):
    """Which named config applies on this node, and why."""

    label: str
    value: str | None  # the node's label value; None when absent
    chosen: str | None  # None: the driver's section alone
    known: tuple[str, ...]
    followed: bool = True  # False: this node's labels are not known (label mode off, or not read yet)
    kind: str = "label"  # or "annotation": what ``label`` is the key of
    kept: bool = False  # the value names no config: ``chosen`` is the one the driver already runs

    @property
    def unknown(self) -> bool:
        return self.value is not None and self.value not in self.known

    def describe(self, driver: str) -> str:
        known = ", ".join(self.known)
        what = f"node {self.kind}"
        if self.unknown:
            keeping = (f"keeping the config {self.chosen!r} it runs with" if self.kept and self.chosen else
                       "keeping its section alone, as it runs" if self.kept else
                       f"using the default config {self.chosen!r}" if self.chosen else
                       f"using drivers.{driver} without a per-node config")
            return (f"{what} {self.label}={self.value!r} names no config in drivers.{driver}.configByLabel."
                    f"configs (known: {known}); {keeping}")
        if self.value is not None:
            return f"{what} {self.label}={self.value} selects config {self.chosen!r}"
        why = f"{what} {self.label} is not set" if self.followed else "node labels are not known"
        if self.chosen is not None:
            return f"{why}; using the default config {self.chosen!r}"
        return (f"{why} and there is no default config (known: {known}); using drivers.{driver} without a "
                "per-node config")


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes label key (``[prefix/]name``), or None."""
    prefix, _, name = key.rpartition("/")
    if "/" in prefix:
        return "has more than one '/'"
    if "/" in key and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return f"prefix {prefix!r} is not a DNS subdomain (lower case, digits, '-' and '.', at most 253)"
    if not name or len(name) > 63 or not QUALIFIED_NAME_PART.fullmatch(name):
        return (f"name {name!r} must be 1-63 characters of letters, digits, '-', '_' and '.', "
                "starting and ending with a letter or digit")
    return None


def parse_config_by_label(driver: str, raw: Any, where: str, source: str | None = None) -> ConfigByLabel:
    """Validate a ``configByLabel`` value; ConfigError naming the key on anything wrong."""
    if not isinstance(raw, Mapping):
        raise ConfigError(where, f"must be a mapping with label, configs and default, not {type(raw).__name__}",
                          source)
    for key in raw:
        if key not in _KEYS:
            raise ConfigError(f"{where}.{key}", "unknown key (configByLabel has label or annotation, default and "
                              "configs)", source)
    if "label" in raw and "annotation" in raw:
        raise ConfigError(f"{where}.annotation", "give label or annotation, not both: one of them picks the config",
                          source)
    kind = "annotation" if "annotation" in raw else "label"
    label = raw.get(kind)
    if not isinstance(label, str):
        raise ConfigError(f"{where}.{kind}", "is required, a string: the node label key, e.g. "
                          "nvidia.com/device-plugin.config (or annotation: a node annotation key)", source)
    problem = label_key_problem(label)  # annotation keys follow the same [prefix/]name rule
    if problem:
        raise ConfigError(f"{where}.{kind}", f"{label!r} is not a Kubernetes {kind} key: {problem}", source)
    if kind == "label" and label == LABEL_PREFIX + driver:
        raise ConfigError(f"{where}.label", f"{label} turns the driver on and off; use a label of its own", source)
    configs = raw.get("configs")
    if not isinstance(configs, Mapping) or not configs:
        what = "is empty" if isinstance(configs, Mapping) else f"must be a mapping of names, not {_kind(configs)}"
        raise ConfigError(f"{where}.configs", f"{what} (name: keys merged over drivers.{driver})", source)
    parsed = {_config_name(name, f"{where}.configs", source): _overlay(body, f"{where}.configs.{name}", source)
              for name, body in configs.items()}
    default = raw.get("default")
    if default is not None:
        default = str(default) if isinstance(default, int) and not isinstance(default, bool) else default
        if not isinstance(default, str) or default not in parsed:
            raise ConfigError(f"{where}.default", f"{default!r} is not among configs (known: {', '.join(parsed)})",
                              source)
    return ConfigByLabel(label, parsed, default, kind)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _config_name(name: Any, where: str, source: str | None) -> str:
    # YAML reads `1:` as an int; the label value is the string "1".
    text = str(name) if isinstance(name, int) and not isinstance(name, bool) else name
    if not isinstance(text, str) or len(text) > 63 or not QUALIFIED_NAME_PART.fullmatch(text):
        raise ConfigError(f"{where}.{name}", "a config name must be a label value: 1-63 letters, digits, '-', '_' "
                          "and '.', starting and ending with a letter or digit", source)
    return text


def _overlay(body: Any, where: str, source: str | None) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise ConfigError(where, f"must be a mapping of the driver's keys, not {type(body).__name__}", source)
    for key in HOST_KEYS:
        if key in body:
            how = {FRONTEND: f"the node label {LABEL_PREFIX}<driver>.frontend picks the front-end per node",
                   DRA_DRIVER_NAME: "a driver has one DRA name on every node"}.get(
                key, f"the node label {LABEL_PREFIX}<driver> turns a driver on and off")
            raise ConfigError(f"{where}.{key}", f"cannot be set per config ({how})", source)
    return dict(body)


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``: mappings merged key by key, other values replaced, None removes the key."""
    merged = dict(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def select(by_label: ConfigByLabel, labels: Mapping[str, str] | None, running: str | None = None) -> Selection:
    """The config this node's labels choose (no labels known: as if the label were absent).

    A value that names no config (a typo, a config removed) keeps ``running``, the config the
    driver runs with ('' for its section alone); with none yet, the default applies.
    """
    value = by_label.value_in(labels or {})
    kept = False
    if value is None:
        chosen = by_label.fallback
    elif value in by_label.configs:
        chosen = value
    elif running is not None and (running == "" or running in by_label.configs):
        chosen, kept = running or None, True
    else:
        chosen = by_label.fallback
    return Selection(by_label.label, value, chosen, tuple(by_label.configs), labels is not None, by_label.kind,
                     kept)


def apply(section: Mapping[str, Any], by_label: ConfigByLabel | None, chosen: str | None) -> dict[str, Any]:
    """The section without ``configByLabel``, with the config ``chosen`` merged over it."""
    base = {k: v for k, v in section.items() if k not in (CONFIG_BY_LABEL, "pauseByLabel")}
    if by_label is None or chosen is None:
        return base
    return merge(base, by_label.configs[chosen])


def with_host_keys(section: dict[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """A driver section's JSON schema with the host's keys (``enabled``, ``configByLabel``) added."""
    ref = section.get("$ref")
    root = defs[ref.rpartition("/")[2]] if isinstance(ref, str) and len(section) == 1 else section
    own = root.get("properties")
    keys = list(own) if isinstance(own, dict) and root.get("additionalProperties") is False else None
    overlay: dict[str, Any] = {"type": "object", "description": "keys of this section, merged over it"}
    if keys is not None:
        overlay["propertyNames"] = {"enum": keys}
    label_value = {"type": "string", "pattern": f"^{QUALIFIED_NAME_PART.pattern}$", "maxLength": 63}
    pause_rule = {"type": "object", "properties": {"label": {"type": "string"},
                                                   "values": {"type": "array", "items": label_value, "minItems": 1}},
                  "required": ["label", "values"], "additionalProperties": False}
    host = {
        "enabled": {"type": "boolean", "default": True,
                    "description": f"the host's: the default that the node label {LABEL_PREFIX}<driver> overrides"},
        CONFIG_BY_LABEL: {
            "type": "object",
            "description": "the host's: a per-node config, chosen by the value of a node label (or annotation)",
            "properties": {
                "label": {"type": "string", "description": "a node label key, e.g. nvidia.com/device-plugin.config"},
                "annotation": {"type": "string", "description": "instead of label: a node annotation key, e.g. "
                               "fpga.intel.com/device-plugin-mode"},
                "default": {"type": "string", "description": "the config for nodes without the label"},
                "configs": {"type": "object", "minProperties": 1,
                            "propertyNames": {"pattern": f"^{QUALIFIED_NAME_PART.pattern}$", "maxLength": 63},
                            "additionalProperties": {"anyOf": [overlay, {"type": "null"}]}},
            },
            "required": ["configs"],
            "oneOf": [{"required": ["label"]}, {"required": ["annotation"]}],
            "additionalProperties": False,
        },
        FRONTEND: {"enum": list(FRONTENDS), "default": FRONTENDS[0],
                   "description": "the host's: how this driver's devices reach pods: the Device Plugin API, or DRA "
                                  "(Dynamic Resource Allocation; driver API 1.3)"},
        DRA_DRIVER_NAME: {"type": "string", "maxLength": DRA_NAME_MAX,
                          "pattern": f"^{DNS1123_SUBDOMAIN.pattern}$",
                          "description": "the host's: the DRA driver name this driver registers with "
                                         "(default <driver>.multidp.io)"},
        "pauseByLabel": {
            "description": "the host's: a {label, values} rule or a list of them; while any rule's node label has "
                           "one of its values, the driver is stopped (resources withdrawn) and started again when "
                           "none does",
            "oneOf": [pause_rule, {"type": "array", "items": pause_rule, "minItems": 1}],
        },
    }
    base = {k: v for k, v in root.items() if k != "properties"}
    return {**base, "properties": {**(own if isinstance(own, dict) else {}), **host}}
