"""``drivers.<name>.pauseByLabel``: a node label whose value puts a driver aside for a while.

NVIDIA's mig-manager sets ``nvidia.com/gpu.deploy.device-plugin=paused-for-mig-change`` on a
node before it repartitions the GPUs, and waits for the device plugin to let go of them. With
``pauseByLabel: {label: nvidia.com/gpu.deploy.device-plugin, values: [paused-for-mig-change]}``
the host stops that driver there (its resources withdrawn, the driver closed, so NVML lets go)
while the label has one of ``values``, and starts it again when the label changes. Any other
value (``false``, which operators set to turn the GPU Operator's own plugin off) changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from multidp.config.bylabel import label_key_problem  # the same label-key rule as configByLabel
from multidp.errors import ConfigError
from multidp.names import QUALIFIED_NAME_PART

PAUSE_BY_LABEL = "pauseByLabel"


@dataclass(frozen=True)
class PauseByLabel:
    label: str
    values: tuple[str, ...]

    def paused_by(self, labels: Mapping[str, str] | None) -> str | None:
        """Why the driver is paused on a node with ``labels`` (None: it is not)."""
        value = (labels or {}).get(self.label)
        return f"paused by node label {self.label}={value}" if value in self.values else None


def parse_pause_by_label(raw: Any, where: str, source: str | None = None) -> PauseByLabel:
    """Validate a ``pauseByLabel`` value; ConfigError naming the key on anything wrong."""
    if not isinstance(raw, Mapping):
        raise ConfigError(where, f"must be a mapping with label and values, not {type(raw).__name__}", source)
    for key in raw:
        if key not in ("label", "values"):
            raise ConfigError(f"{where}.{key}", "unknown key (pauseByLabel has label and values)", source)
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
    return PauseByLabel(label, tuple(values))
