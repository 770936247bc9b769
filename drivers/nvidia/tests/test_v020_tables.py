"""NVIDIA v0.20.0's published test tables, ported: pattern matching and the sharing section's refusals."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from multidp import ConfigError

from multidp_nvidia.config import NvidiaConfig
from multidp_nvidia.inventory import matches
from multidp_nvidia.replicas import checked_devices, device_ref_kind
from multidp_nvidia.settings import resolve

# NVIDIA/k8s-device-plugin v0.20.0, api/config/v1/resources_test.go, TestResourcePatternMatches.
PATTERNS = [
    ("1g.24gb", "1g.24gb", True), ("1g.24gb", "2g.48gb", False), ("1g.24gb", "1g.24gb-me", False),
    ("1g.24gb", "1g.24gb+me.all", False), ("1g.24gb", "x1g.24gb", False), ("1g.24gb-me", "1g.24gb-me", True),
    ("1g.24gb+me.all", "1g.24gb+me.all", True), ("*", "1g.24gb-me", True), ("1g.*", "1g.24gb", True),
    ("1g.*", "2g.48gb", False), ("1g.24gb+gfx", "1g.24gb+gfx", True), ("1g.24gb", "1g.24gb+gfx", False),
    ("1g.24gb+gfx", "1g.24gb", False), ("1g.24gb+gfx", "1g.24gb-me", False), ("2g.48gb+gfx", "2g.48gb+gfx", True),
    ("2g.48gb", "2g.48gb+gfx", False), ("*gb", "1g.24gb", True), ("*gb", "1g.24gb-me", False),
]


@pytest.mark.parametrize(("pattern", "value", "expected"), PATTERNS)
def test_patterns_match_as_nvidia_v020(pattern: str, value: str, expected: bool) -> None:
    assert matches(pattern, value) is expected


def test_pattern_issue_cases() -> None:
    # Issue 13 item 2: "1g.10gb" and "*gb" must not pull +me slices into the operator's resource.
    assert not matches("1g.10gb", "1g.10gb+me") and not matches("*gb", "1g.10gb+me")
    assert not matches("H100", "NVIDIA H100 80GB HBM3") and matches("*H100*", "NVIDIA H100 80GB HBM3")


# api/config/v1/replicas_test.go, TestReplicatedDeviceRef.
@pytest.mark.parametrize(("ref", "kind"), [
    ("0", "gpuIndex"), ("0:0", "migIndex"), ("GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c", "uuid"),
    ("MIG-3eb87630-93d5-b2b6-b8ff-9b359caf4ee2", "uuid"), ("MIG-GPU-662077db-fa3f-0d8f-9502-21ab0ef058a2/10/0", "uuid"),
])
def test_device_ref_kinds(ref: str, kind: str) -> None:
    assert device_ref_kind(ref) == kind


# replicas_test.go, TestUnmarshalReplicatedDevices (inputs as YAML gives them; `` is no value at all).
UUID = "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"
DEVICES = [
    ("not-all", None), (-2, None), (2.0, None), ([-1], None), (["-1"], None), (["invalid-UUID"], None),
    (["GPU-UUID"], None), (["MIG-UUID"], None), (["MIG-GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"], None),
    ("all", "all"), (2, 2), ([0], ("0",)), (["0"], ("0",)), (["0:0"], ("0:0",)), ([UUID], (UUID,)),
    (["MIG-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"], ("MIG-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c",)),
    (["MIG-GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c/0/0"], ("MIG-GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c/0/0",)),
    ([0, "0:0", UUID], ("0", "0:0", UUID)), (["0", "0:0", UUID], ("0", "0:0", UUID)),
    (0, None), (True, None), ([True], None),  # the issue's additions: a count above 0, no booleans
]


@pytest.mark.parametrize(("devices", "expected"), DEVICES)
def test_devices_as_nvidia_v020(devices: Any, expected: Any) -> None:
    if expected is None:
        with pytest.raises(ConfigError) as caught:
            checked_devices(devices, "x.devices", None)
        assert caught.value.key.startswith("x.devices")
    else:
        assert checked_devices(devices, "x.devices", None) == expected


def _sliced(section: dict[str, Any]) -> Any:
    return resolve(msgspec.convert({"sharing": {"timeSlicing": section}}, NvidiaConfig), {})


# replicas_test.go, TestUnmarshalReplicatedResource and TestUnmarshalReplicatedResources: what is refused.
REFUSED_SECTIONS: list[tuple[dict[str, Any], str]] = [
    ({}, "sharing.timeSlicing.resources"),
    ({"resources": []}, "sharing.timeSlicing.resources"),
    ({"resources": [{}]}, "sharing.timeSlicing.resources[0]"),
    ({"resources": [{"name": "valid"}]}, "sharing.timeSlicing.resources[0]"),
    ({"resources": [{"name": "valid", "devices": "all"}]}, "sharing.timeSlicing.resources[0]"),
    ({"resources": [{"name": "valid", "devices": "all", "rename": "valid-shared"}]}, "resources[0]"),
    ({"resources": [{"name": "valid", "replicas": -1}]}, "sharing.timeSlicing.resources[0].replicas"),
    ({"resources": [{"name": "valid", "replicas": 0}]}, "sharing.timeSlicing.resources[0].replicas"),
    ({"resources": [{"name": "valid", "replicas": 1}]}, "sharing.timeSlicing.resources[0].replicas"),
    ({"resources": [{"name": "$invalid$", "replicas": 2, "rename": "valid-shared"}]}, "resources[0].name"),
    ({"resources": [{"name": "valid", "replicas": 2, "rename": "$invalid$"}]}, "resources[0].rename"),
    ({"resources": [{"name": "$invalid$", "replicas": 2}]}, "resources[0].name"),
]


@pytest.mark.parametrize(("section", "key"), REFUSED_SECTIONS)
def test_sharing_refusals_as_nvidia_v020(section: dict[str, Any], key: str) -> None:
    with pytest.raises((ConfigError, msgspec.ValidationError)) as caught:
        _sliced(section)
    where = caught.value.key if isinstance(caught.value, ConfigError) else str(caught.value)
    assert key in where


ACCEPTED_SECTIONS = [
    ({"resources": [{"name": "valid", "devices": "all", "replicas": 2}]}, [("nvidia.com/valid", 2, "all")]),
    ({"resources": [{"name": "valid", "replicas": 2, "rename": "valid-shared"}]}, [("nvidia.com/valid", 2, "all")]),
    ({"resources": [{"name": "valid1", "replicas": 2}, {"name": "valid2", "replicas": 2}]},
     [("nvidia.com/valid1", 2, "all"), ("nvidia.com/valid2", 2, "all")]),
]


@pytest.mark.parametrize(("section", "rules"), ACCEPTED_SECTIONS)
def test_sharing_accepted_as_nvidia_v020(section: dict[str, Any], rules: list[tuple[str, int, str]]) -> None:
    assert [(r.resource, r.replicas, r.devices) for r in _sliced(section).replica_rules] == rules
