"""Every flag, variable and config key of NVIDIA v0.20.0 has a verdict, and the drop-in page shows it."""

from __future__ import annotations

import re
from pathlib import Path

from multidp_nvidia.keys import TABLE

HERE = Path(__file__).parent
# Taken from NVIDIA/k8s-device-plugin v0.20.0 by drivers/nvidia/scripts/nvidia_keys.py (api/config/v1/*.go json
# tags, cmd/nvidia-device-plugin/main.go flags and EnvVars, internal/rm/health.go DP_* variables).
NVIDIA_LIST = HERE / "nvidia_v0.20.0_keys.txt"
DROP_IN = HERE.parents[2] / "docs/drop-in/nvidia.md"


def _nvidia_entries() -> list[str]:
    return [line.strip() for line in NVIDIA_LIST.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_every_nvidia_entry_has_a_verdict() -> None:
    entries = _nvidia_entries()
    assert len(entries) > 90  # the list was read, not an empty file
    assert [e for e in entries if e not in TABLE] == []


def test_the_table_names_only_nvidia_entries() -> None:
    assert [e for e in TABLE if e not in _nvidia_entries()] == []


def test_drop_in_page_lists_every_entry_with_its_verdict() -> None:
    rows = {}
    for line in DROP_IN.read_text().splitlines():
        match = re.match(r"\| `([^`]+)` \| (key|variable|flag) \| ([a-z ]+) \|", line)
        if match:
            rows[f"{match.group(2)} {match.group(1)}"] = match.group(3)
    assert {entry: verdict.verdict for entry, verdict in TABLE.items()} == rows
