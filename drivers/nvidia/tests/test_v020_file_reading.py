"""NVIDIA's config file read as NVIDIA v0.20.0 reads it: key order, merging, duplicates, null sections,
and the naming keys NVIDIA discards. The reference is NVIDIA/k8s-device-plugin at v0.20.0; each test
names the file it follows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from multidp import ConfigError
from multidp.testing import check_config

from multidp_nvidia import machines
from multidp_nvidia.config import NvidiaConfig
from multidp_nvidia.fake_nvml import FakeNvml
from multidp_nvidia.plugin import NvidiaPlugin
from multidp_nvidia.settings import resolve

GPU = "nvidia.com/gpu"
TS = "sharing:\n  timeSlicing:\n"


def _resolve(section: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Any:
    return resolve(msgspec.convert(section or {}, NvidiaConfig), environ or {})


def _file(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return _resolve({"configFile": str(path)}, environ)


# vendor/sigs.k8s.io/yaml/yaml.go: YAML -> Go map -> json.Marshal (map keys sorted by bytes) -> Go's JSON
# decoder, which matches struct fields in any case and decodes each key in that order.
@pytest.mark.parametrize(("text", "mig_strategy", "pass_specs"), [
    ("flags:\n  migStrategy: single\n  MIGSTRATEGY: mixed\n", "single", False),  # "MIGSTRATEGY" < "migStrategy"
    ("flags:\n  MIGSTRATEGY: mixed\n  migStrategy: single\n", "single", False),  # file order does not matter
    ("flags:\n  migstrategy: mixed\n  migStrategy: single\n", "mixed", False),  # "migStrategy" < "migstrategy"
    # a struct given twice is decoded twice into the same struct: the fields merge
    ("flags:\n  migStrategy: mixed\nFlags:\n  plugin:\n    passDeviceSpecs: true\n", "mixed", True),
    ("Flags:\n  migStrategy: single\n  plugin: {passDeviceSpecs: true}\nflags:\n  migStrategy: mixed\n",
     "mixed", True),
    ("flags:\n  plugin: {passDeviceSpecs: true}\n  Plugin: {deviceIDStrategy: index}\n", "none", True),
])
def test_two_spellings_of_one_key_are_read_in_byte_order(tmp_path: Path, text: str, mig_strategy: str,
                                                         pass_specs: bool) -> None:
    s = _file(tmp_path, text)
    assert (s.mig_strategy, s.pass_device_specs) == (mig_strategy, pass_specs)
    assert any("are one key to NVIDIA" in w and "byte order" in w for w in s.warnings), s.warnings


def test_a_sharing_section_in_two_spellings_is_replaced_and_both_are_checked(tmp_path: Path) -> None:
    # replicas.go ReplicatedResources.UnmarshalJSON: each decode sets renameByDefault and resources,
    # failRequestsGreaterThanOne only when given; the first decode still fails on its own errors.
    s = _file(tmp_path, "sharing:\n  TimeSlicing:\n    renameByDefault: true\n    failRequestsGreaterThanOne: true\n"
                        "    resources: [{name: gpu, replicas: 2}]\n"
                        "  timeSlicing:\n    resources: [{name: gpu, replicas: 3}]\n")
    rule = s.replica_rules[0]
    assert (rule.replicas, rule.serve_as, s.fail_requests_greater_than_one) == (3, GPU, True)
    with pytest.raises(ConfigError) as caught:
        _file(tmp_path, "sharing:\n  TimeSlicing:\n    resources: [{name: gpu, replicas: 1}]\n"
                        "  timeSlicing:\n    resources: [{name: gpu, replicas: 3}]\n")
    assert caught.value.key == "sharing.timeSlicing.resources[0].replicas"


# go.yaml.in/yaml/v2 (sigs.k8s.io/yaml's Unmarshal is not strict): a key given twice keeps the last.
def test_a_key_given_twice_keeps_the_last_with_a_warning(tmp_path: Path) -> None:
    s = _file(tmp_path, "flags:\n  migStrategy: single\n  migStrategy: mixed\n")
    assert s.mig_strategy == "mixed"
    assert [w for w in s.warnings if "flags.migStrategy is given 2 times" in w and "config.yaml" in w], s.warnings


def test_multidps_own_section_stays_strict_about_a_key_given_twice() -> None:
    from multidp import parse_yaml

    with pytest.raises(ConfigError, match="given twice"):
        parse_yaml("drivers:\n  nvidia: {}\n  nvidia: {}\n")


# api/config/v1/sharing.go: TimeSlicing is a struct value, so null reaches ReplicatedResources.UnmarshalJSON,
# which finds no resources ("no resources specified"); MPS is a pointer, and null leaves it unset.
@pytest.mark.parametrize("inline", [False, True])
def test_a_null_time_slicing_section_is_refused_and_a_null_mps_is_not(tmp_path: Path, inline: bool) -> None:
    def read(text: str) -> Any:
        return _resolve({"sharing": msgspec.yaml.decode(text)["sharing"]}) if inline else _file(tmp_path, text)

    with pytest.raises(ConfigError, match="no resources specified") as caught:
        read("sharing:\n  timeSlicing:\n")
    assert caught.value.key.endswith("sharing.timeSlicing")
    assert read("sharing:\n  mps:\n").replica_rules == ()


# settings.py: a variable wins over the file; its error is its own even when the file is also wrong there.
def test_an_error_of_a_variable_is_not_blamed_on_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _file(tmp_path, "flags:\n  deviceDiscoveryStrategy: bogus\n", {"DEVICE_DISCOVERY_STRATEGY": "tegra"})
    assert caught.value.source is None and "tegra" in caught.value.message
    with pytest.raises(ConfigError) as caught:
        _file(tmp_path, "flags:\n  deviceDiscoveryStrategy: bogus\n")
    assert caught.value.source == str(tmp_path / "config.yaml") and "bogus" in caught.value.message


# api/config/v1/config.go DisableResourceNamingInConfig (called in cmd/nvidia-device-plugin/main.go) and
# replicas.go disableResoureRenaming: resources.* dropped; rename dropped, or <name>.shared under
# renameByDefault; devices back to all.
@pytest.mark.parametrize(("sharing", "serve_as", "devices", "warned"), [
    ("    resources: [{name: gpu, replicas: 2, rename: gpu-half}]\n", GPU, "all", ["resources[0].rename"]),
    ("    renameByDefault: true\n    resources: [{name: gpu, replicas: 2, rename: gpu-half}]\n", f"{GPU}.shared",
     "all", ["resources[0].rename", f"serves {GPU}.shared"]),
    ("    renameByDefault: true\n    resources: [{name: gpu, replicas: 2, rename: gpu.shared}]\n", f"{GPU}.shared",
     "all", []),  # the name NVIDIA forces anyway: nothing is discarded
    ("    resources: [{name: gpu, replicas: 2, devices: [0]}]\n", GPU, "all", ["resources[0].devices"]),
    ("    resources: [{name: gpu, replicas: 2, devices: 1}]\n", GPU, "all", ["resources[0].devices"]),
    ("    resources: [{name: gpu, replicas: 2, devices: all}]\n", GPU, "all", []),
])
def test_naming_keys_in_nvidias_file_are_discarded_as_nvidia_does(tmp_path: Path, sharing: str, serve_as: str,
                                                                  devices: str, warned: list[str]) -> None:
    s = _file(tmp_path, TS + sharing)
    assert (s.replica_rules[0].serve_as, s.replica_rules[0].devices) == (serve_as, devices)
    mine = [w for w in s.warnings if "DisableResourceNamingInConfig" in w]
    assert len(mine) == (1 if warned else 0), s.warnings
    for words in warned:
        assert words in mine[0] and "config.yaml" in mine[0] and "drivers.nvidia.sharing.timeSlicing" in mine[0]
    # the same keys in multidp's own section are honoured
    inline = _resolve({"sharing": msgspec.yaml.decode(TS + sharing)["sharing"]})
    assert not [w for w in inline.warnings if "DisableResourceNamingInConfig" in w]


def test_resources_in_nvidias_file_are_discarded_and_honoured_inline(tmp_path: Path) -> None:
    text = "resources:\n  gpus: [{pattern: '*', name: big}]\n  mig: [{pattern: '*', name: small}]\n"
    s = _file(tmp_path, text)
    assert (s.gpu_resources, s.mig_resources) == ((("*", GPU),), ())
    mine = [w for w in s.warnings if "DisableResourceNamingInConfig" in w]
    assert [w.split(" is ignored")[0].rsplit(" ", 1)[1] for w in mine] == ["resources.gpus", "resources.mig"]
    assert "drivers.nvidia.resources.gpus" in mine[0]
    inline = _resolve(msgspec.yaml.decode(text))
    assert inline.gpu_resources[0] == ("*", "nvidia.com/big")


# resources.go NewResourceName: the names are parsed (and refused) before they are discarded.
@pytest.mark.parametrize(("text", "key"), [
    (TS + "    resources: [{name: gpu, replicas: 2, rename: Bad_Name}]\n", "sharing.timeSlicing.resources[0].rename"),
    ("resources:\n  gpus: [{pattern: '*', name: example.com/gpu}]\n", "resources.gpus[0].name"),
])
def test_a_name_nvidia_cannot_parse_fails_the_file_though_it_is_discarded(tmp_path: Path, text: str,
                                                                          key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _file(tmp_path, text)
    assert caught.value.key == key and caught.value.source == str(tmp_path / "config.yaml")


def test_config_check_reports_each_discarded_key(tmp_path: Path) -> None:
    path = tmp_path / "nvidia.yaml"
    path.write_text(TS + "    resources: [{name: gpu, replicas: 2, rename: a, devices: [0]}]\n")
    plugin = NvidiaPlugin(FakeNvml(machines.without_nvml()))
    records = check_config(plugin, {"configFile": str(path)}, name="nvidia")  # as `multidp config check`
    assert len([r for r in records if "DisableResourceNamingInConfig" in r and str(path) in r]) == 2, records
