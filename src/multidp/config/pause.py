"""``drivers.<name>.pauseByLabel``: node labels whose values put a driver aside for a while.

A rule is ``{label, values}``; ``pauseByLabel`` is one rule or a list of them, and the driver is
paused while any rule matches: the host stops it there (its resources withdrawn, the driver
closed, so NVML lets go) and starts it again when none does.

The shipped configs pause the nvidia driver for NVIDIA's mig-manager. Its reconfigure command
(public repository NVIDIA/mig-parted, ``pkg/mig/reconfigure``, formerly
``cmd/nvidia-mig-manager``) sets ``nvidia.com/mig.config.state=pending`` before it shuts the GPU
clients down, ``rebooting`` when it reboots the node for a MIG mode change, and ``success`` or
``failed`` at the end. It sets ``nvidia.com/gpu.deploy.device-plugin=paused-for-mig-change``
too, except where that label is ``false``: an operator turned the GPU Operator's own plugin off
there, which is what a switch to multidp does, so mig-manager leaves it alone and restores it
unchanged. Hence two rules::

    pauseByLabel:
      - {label: nvidia.com/gpu.deploy.device-plugin, values: [paused-for-mig-change]}
      - {label: nvidia.com/mig.config.state, values: [pending, rebooting]}

``false`` alone matches neither, so it changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from multidp.config.bylabel import label_key_problem  # the same label-key rule as configByLabel
from multidp.errors import ConfigError
from multidp.names import QUALIFIED_NAME_PART

PAUSE_BY_LABEL = "pauseByLabel"


class PauseRule(msgspec.Struct, frozen=True):
    """One ``{label, values}``: it matches while ``label`` has one of ``values``."""

    label: str
    values: tuple[str, ...]


class PauseByLabel(msgspec.Struct, frozen=True):
    """A driver's ``pauseByLabel``: its rules, in the config's order."""

    rules: tuple[PauseRule, ...]

    def paused_by(self, labels: Mapping[str, str] | None) -> str | None:
        """Why the driver is paused on a node with ``labels``, naming the first rule that matches
        (None: no rule does)."""
        for rule in self.rules:
            value = (labels or {}).get(rule.label)
            if value in rule.values:
                return f"paused by node label {rule.label}={value}"
        return None


def parse_pause_by_label(raw: Any, where: str, source: str | None = None) -> PauseByLabel:
    """Validate a ``pauseByLabel`` value (one rule, or a list of them); ConfigError naming the key,
    with the rule's index in a list (``drivers.nvidia.pauseByLabel[1].values``), on anything wrong."""
    if isinstance(raw, list):
        if not raw:
            raise ConfigError(where, "must have at least one {label, values} rule (or remove the key)", source)
        return PauseByLabel(tuple(_parse_rule(rule, f"{where}[{i}]", source) for i, rule in enumerate(raw)))
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "must be a mapping with label and values, or a list of them, "
                          f"not {type(raw).__name__}", source)
    return PauseByLabel((_parse_rule(raw, where, source),))


def _parse_rule(raw: Any, where: str, source: str | None) -> PauseRule:
    if not isinstance(raw, Mapping):
        raise ConfigError(where, f"must be a mapping with label and values, not {type(raw).__name__}", source)
    for key in raw:
        if key not in ("label", "values"):
            raise ConfigError(f"{where}.{key}", "unknown key (a pauseByLabel rule has label and values)", source)
    label = raw.get("label")
    if not isinstance(label, str):
        raise ConfigError(f"{where}.label", "is required: a node label key, e.g. nvidia.com/gpu.deploy.device-plugin",
                          source)
    problem = label_key_problem(label)
    if problem:
        raise ConfigError(f"{where}.label", f"{label!r} is not a Kubernetes label key: {problem}", source)
    values = raw.get("values")
    if not isinstance(values, list) or not values or not all(
            isinstance(v, str) and len(v) <= 63 and QUALIFIED_NAME_PART.fullmatch(v) for v in values):
        raise ConfigError(f"{where}.values", "must be a non-empty list of label values (1-63 letters, digits, "
                          "'-', '_' and '.', starting and ending with a letter or digit)", source)
    return PauseRule(label, tuple(values))
