"""Settings: NVIDIA's file, NVIDIA's variables, multidp's section, and what happens without NVML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
from multidp import ConfigError
from multidp.testing import SamplePlugin

from multidp_nvidia import machines
from multidp_nvidia.config import NvidiaConfig
from multidp_nvidia.plugin import NvidiaPlugin
from multidp_nvidia.settings import resolve

from .conftest import poll_until


def _resolve(section: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Any:
    return resolve(msgspec.convert(section or {}, NvidiaConfig), environ or {})


def test_defaults_match_nvidias_except_fail_on_init_error() -> None:
    s = _resolve()
    assert (s.mig_strategy, s.list_strategies, s.id_strategy, s.pass_device_specs) == ("none", ("envvar",), "uuid",
                                                                                        False)
    assert s.fail_on_init_error is False  # NVIDIA's default is true; one DaemonSet runs on every node
    assert s.ignored_xids == {13, 31, 43, 45, 68, 109}


def test_precedence_section_over_nvidia_env_over_nvidia_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("version: v1\nflags:\n  migStrategy: single\n  plugin:\n    passDeviceSpecs: false\n"
                    "    deviceIDStrategy: index\n")
    env = {"PASS_DEVICE_SPECS": "true", "MIG_STRATEGY": "mixed", "CONFIG_FILE": str(path)}
    s = _resolve({}, env)
    assert (s.pass_device_specs, s.mig_strategy, s.id_strategy) == (True, "mixed", "index")
    s = _resolve({"migStrategy": "none", "flags": {"plugin": {"passDeviceSpecs": False}}}, env)
    assert (s.pass_device_specs, s.mig_strategy) == (False, "none")


def test_device_list_strategy_forms() -> None:
    assert _resolve({}, {"DEVICE_LIST_STRATEGY": "envvar,cdi-cri"}).list_strategies == ("envvar", "cdi-cri")
    assert _resolve({"deviceListStrategy": ["cdi-annotations"]}).uses_cdi
    with pytest.raises(ConfigError) as caught:
        _resolve({"deviceListStrategy": "envvar,bogus"})
    assert caught.value.key == "drivers.nvidia.flags.plugin.deviceListStrategy" and "bogus" in str(caught.value)


def test_bad_nvidia_variable_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        _resolve({}, {"PASS_DEVICE_SPECS": "maybe"})
    assert caught.value.key == "PASS_DEVICE_SPECS"
    with pytest.raises(ConfigError) as caught:
        _resolve({}, {"DP_DISABLE_HEALTHCHECKS": "13,banana"})
    assert caught.value.key == "DP_DISABLE_HEALTHCHECKS"


@pytest.mark.parametrize(("text", "where", "words"), [
    ("version: v1\nflags:\n  plugin:\n    passDeviceSpecs: 3\n", "flags.plugin.passDeviceSpecs", "Expected `bool"),
    ("version: v1\nflags: [\n", "", "not valid YAML"),
    ("version: v2\n", "version", "unknown version"),
    ("version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - {name: gpu, replicas: two}\n",
     "sharing.timeSlicing.resources[0].replicas", "Expected `int`"),
])
def test_bad_nvidia_file_names_file_and_key(tmp_path: Path, text: str, where: str, words: str) -> None:
    path = tmp_path / "nvidia.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        _resolve({"configFile": str(path)})
    assert str(path) in str(caught.value) and where in caught.value.key and words in str(caught.value)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _resolve({"configFile": str(tmp_path / "missing.yaml")})
    assert caught.value.key == "drivers.nvidia.configFile" and "missing.yaml" in str(caught.value)


@pytest.mark.parametrize(("make", "words"), [
    (lambda d: _write(d, "[" * 20_000), "nested deeper than 100 levels"),
    (lambda d: _write(d, "# padding\n" * 120_000), "over the limit of 1 MiB"),
    (lambda d: _fifo(d), "not a regular file (a FIFO)"),
    (lambda d: "/dev/zero", "not a regular file (a character device)"),
])
def test_nvidia_file_is_read_with_the_hosts_limits(tmp_path: Path, make: Any, words: str) -> None:
    # The same bounded reader and YAML limits as the host's own config: never a hang, a traceback or a
    # gigabyte read, whatever configFile points at. (A key given twice is NVIDIA's leniency: test_v020_keys.)
    path = make(tmp_path)
    with pytest.raises(ConfigError) as caught:
        _resolve({"configFile": str(path)})
    assert caught.value.key == "drivers.nvidia.configFile"
    assert str(path) in str(caught.value) and words in str(caught.value)


def _write(directory: Path, text: str) -> Path:
    path = directory / "nvidia.yaml"
    path.write_text(text)
    return path


def _fifo(directory: Path) -> Path:
    path = directory / "fifo.yaml"
    os.mkfifo(path)
    return path


def test_bad_rename_is_refused() -> None:  # MPS's own refusals are in test_mps.py
    with pytest.raises(ConfigError) as caught:
        _resolve({"sharing": {"timeSlicing": {"resources": [{"name": "gpu", "replicas": 2, "rename": "Bad_Name."}]}}})
    assert caught.value.key == "drivers.nvidia.sharing.timeSlicing.resources[0].rename"


def test_short_names_get_nvidias_prefix() -> None:
    rules = _resolve({"sharing": {"timeSlicing": {"renameByDefault": True,
                                                  "resources": [{"name": "gpu", "replicas": 2}]}}}).replica_rules
    assert (rules[0].resource, rules[0].serve_as) == ("nvidia.com/gpu", "nvidia.com/gpu.shared")


def test_bad_section_fails_the_driver_not_the_host(multidp_host: Any, kubelet: Any) -> None:
    host = multidp_host({"nvidia": NvidiaPlugin(), "sample": SamplePlugin()},
                        drivers={"nvidia": {"migStrategy": "bogus"}})
    kubelet.wait_registered("example.com/widget")
    assert host.statuses["nvidia"].state == "failed" and "migStrategy" in host.statuses["nvidia"].reason


def test_no_nvml_serves_nothing_with_one_clear_line(nvidia_node: Any, caplog: pytest.LogCaptureFixture) -> None:
    node = nvidia_node(machines.without_nvml(), {"pollInterval": 0.05})
    poll_until(lambda: node.fake.calls["nvmlInit"] >= 3, 10, "a few init attempts")
    assert node.host.endpoints == {} and node.host.statuses["nvidia"].state == "running"
    lines = [r.message for r in caplog.records if "NVML cannot be initialised" in r.message]
    assert len(lines) == 1 and "Driver Not Loaded" in lines[0] and "serving no NVIDIA GPUs" in lines[0]


def test_fail_on_init_error_fails_only_this_driver(multidp_host: Any, kubelet: Any) -> None:
    from multidp_nvidia.fake_nvml import FakeNvml

    host = multidp_host({"nvidia": NvidiaPlugin(FakeNvml(machines.without_nvml())), "sample": SamplePlugin()},
                        drivers={"nvidia": {"flags": {"failOnInitError": True}}})
    kubelet.wait_registered("example.com/widget")
    status = host.statuses["nvidia"]
    assert status.state == "failed" and "failOnInitError is true" in status.reason
    assert "Driver Not Loaded" in status.reason


def test_nvml_recovers_later_and_gpus_appear(nvidia_node: Any) -> None:
    machine = machines.recorded_h100()
    machine.init_error = 9
    node = nvidia_node(machine, {"pollInterval": 0.05})
    poll_until(lambda: node.fake.calls["nvmlInit"] >= 2, 10, "an init attempt")
    machine.init_error = None
    node.devices("nvidia.com/gpu", 1)


@pytest.mark.parametrize(("environ", "key"), [
    ({"NVIDIA_DRIVER_ROOT": "run/nvidia/driver"}, "drivers.nvidia.flags.nvidiaDriverRoot"),
    ({"NVIDIA_DRIVER_ROOT": "/run/nvidia/../../etc"}, "drivers.nvidia.flags.nvidiaDriverRoot"),
    ({"NVIDIA_DEV_ROOT": "/dev/./x"}, "drivers.nvidia.flags.nvidiaDevRoot"),
])
def test_roots_that_become_host_paths_must_be_plain_absolute_paths(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _resolve(environ=environ)
    assert err.value.key == key and "absolute path without" in err.value.message


def test_cdi_annotation_prefix_must_be_a_key_prefix() -> None:
    with pytest.raises(ConfigError, match="is not an annotation key prefix"):
        _resolve({"flags": {"plugin": {"cdiAnnotationPrefix": "../evil"}}})
    assert _resolve({"flags": {"plugin": {"cdiAnnotationPrefix": "cdi.example.com/"}}}).cdi_annotation_prefix \
        == "cdi.example.com/"
    assert _resolve({"flags": {"nvidiaDriverRoot": "/run/nvidia/driver"}}).dev_root == "/run/nvidia/driver"
