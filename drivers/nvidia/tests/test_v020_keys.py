"""NVIDIA v0.20.0's keys, variables and file format: each honoured as NVIDIA does, or refused by name.

The reference is NVIDIA/k8s-device-plugin at v0.20.0; each test names the file it follows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest
from multidp import ConfigError

from multidp_nvidia import machines
from multidp_nvidia.config import NvidiaConfig
from multidp_nvidia.settings import resolve

GPU = "nvidia.com/gpu"
UUID = "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"


def _resolve(section: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Any:
    return resolve(msgspec.convert(section or {}, NvidiaConfig), environ or {})


def _file(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return _resolve({"configFile": str(path)})


# api/config/v1/config.go parseConfigFrom: sigs.k8s.io/yaml, i.e. Go's JSON decoder (any case, unknown ignored).
def test_nvidia_keys_in_any_case(tmp_path: Path) -> None:
    s = _file(tmp_path, "Version: v1\nFLAGS:\n  MigStrategy: mixed\n  Plugin:\n    deviceidstrategy: index\n"
                        "Sharing:\n  TimeSlicing:\n    resources:\n    - {name: gpu, replicas: 3}\n")
    assert (s.mig_strategy, s.id_strategy, s.replica_rules[0].replicas) == ("mixed", "index", 3)


def test_unknown_keys_are_warned_about_and_ignored(tmp_path: Path) -> None:
    s = _file(tmp_path, "version: v1\nflags:\n  migStrategy: single\n  someFutureFlag: 1\nextra: {a: 1}\n")
    assert s.mig_strategy == "single"
    assert any("unknown key flags.someFutureFlag ignored" in w and "config.yaml" in w for w in s.warnings)
    assert any("unknown key extra ignored" in w for w in s.warnings)


# replicas.go: ReplicatedResources / ReplicatedResource unmarshal through a map: exact keys only.
def test_sharing_keys_are_case_sensitive_as_in_nvidia(tmp_path: Path) -> None:
    s = _file(tmp_path, "sharing:\n  timeSlicing:\n    RenameByDefault: true\n    resources:\n"
                        "    - {name: gpu, replicas: 2}\n")
    assert s.replica_rules[0].serve_as == GPU  # NVIDIA ignores RenameByDefault, so does multidp
    assert any("sharing.timeSlicing.RenameByDefault" in w and "did you mean renameByDefault" in w for w in s.warnings)
    with pytest.raises(ConfigError) as caught:  # NVIDIA: "no replicas specified"
        _file(tmp_path, "sharing:\n  timeSlicing:\n    resources:\n    - {name: gpu, Replicas: 2}\n")
    assert "replicas" in str(caught.value) and caught.value.source == str(tmp_path / "config.yaml")


def test_two_spellings_of_one_key_keep_the_one_that_sorts_last(tmp_path: Path) -> None:
    # vendor/sigs.k8s.io/yaml/yaml.go: json.Marshal sorts the keys by bytes, so "migStrategy" (sorting after
    # "MIGSTRATEGY") wins wherever it is in the file; more cases in test_v020_file_reading.
    s = _file(tmp_path, "flags:\n  migStrategy: single\n  MIGSTRATEGY: mixed\n")
    assert s.mig_strategy == "single" and any("are one key to NVIDIA" in w for w in s.warnings)


# api/config/v1/flags.go: the keys that used to make the driver fail ("unknown field").
def test_new_v020_flag_keys_are_honoured(tmp_path: Path) -> None:
    s = _file(tmp_path, "flags:\n  gdrcopyEnabled: true\n  deviceDiscoveryStrategy: nvml\n  plugin:\n"
                        "    sharedDevicesAllocationPolicy: packed\nimex:\n  channelIDs: [0]\n  required: true\n")
    assert (s.gdrcopy, s.replica_policy, s.imex_channels, s.imex_required) == (True, "pack", (0,), True)
    assert _resolve({"replicaPolicy": "spread", "flags": {"plugin": {"sharedDevicesAllocationPolicy": "packed"}}}
                    ).replica_policy == "spread"  # multidp's own key wins


@pytest.mark.parametrize(("section", "environ", "key", "words"), [
    # cmd/nvidia-device-plugin/main.go validateFlags
    ({"flags": {"plugin": {"sharedDevicesAllocationPolicy": "random"}}}, {},
     "drivers.nvidia.flags.plugin.sharedDevicesAllocationPolicy", "distributed or packed"),
    ({}, {"DEVICE_DISCOVERY_STRATEGY": "tegra"}, "drivers.nvidia.flags.deviceDiscoveryStrategy", "NVML only"),
    ({}, {"DEVICE_DISCOVERY_STRATEGY": "bogus"}, "drivers.nvidia.flags.deviceDiscoveryStrategy", "invalid option"),
    # api/config/v1/imex.go AssertChannelIDsValid
    ({"imex": {"channelIDs": [1]}}, {}, "drivers.nvidia.imex.channelIDs", "must be [] or [0]"),
    ({}, {"IMEX_CHANNEL_IDS": "0,1"}, "drivers.nvidia.imex.channelIDs", "must be [] or [0]"),
    ({}, {"IMEX_CHANNEL_IDS": "zero"}, "IMEX_CHANNEL_IDS", "comma list of integers"),
    ({}, {"CDI_FEATURE_FLAGS": "disable-nvsandboxutils"}, "CDI_FEATURE_FLAGS", "not supported"),
    ({}, {"KUBELET_SOCKET": "/other/kubelet.sock"}, "KUBELET_SOCKET", "--kubelet-socket"),
    ({}, {"KUBELET_SOCKET": ""}, "KUBELET_SOCKET", "--kubelet-socket"),
    ({"deviceListStrategy": "cdi-cri", "flags": {"gdrcopyEnabled": True}}, {}, "drivers.nvidia.flags.gdrcopyEnabled",
     "not supported with a cdi-*"),
])
def test_refusals_name_the_key(section: dict[str, Any], environ: dict[str, str], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _resolve(section, environ)
    assert caught.value.key == key and words in caught.value.message


def test_v020_variables() -> None:
    env = {"GDRCOPY_ENABLED": "true", "SHARED_DEVICES_ALLOCATION_POLICY": "packed", "IMEX_CHANNEL_IDS": "0",
           "IMEX_REQUIRED": "1", "DEVICE_DISCOVERY_STRATEGY": "auto",
           "KUBELET_SOCKET": "/var/lib/kubelet/device-plugins/kubelet.sock"}
    s = _resolve({}, env)
    assert (s.gdrcopy, s.replica_policy, s.imex_channels, s.imex_required) == (True, "pack", (0,), True)
    # main.go: --driver-root-ctr-path reads DRIVER_ROOT_CTR_PATH before CONTAINER_DRIVER_ROOT (urfave/cli: first set)
    both = {"DRIVER_ROOT_CTR_PATH": "/driver-root", "CONTAINER_DRIVER_ROOT": "/other"}
    assert _resolve({}, both).container_driver_root == "/driver-root"
    assert _resolve({}, {"CONTAINER_DRIVER_ROOT": "/other"}).container_driver_root == "/other"


def test_cdi_disable_hooks() -> None:
    assert _resolve({}, {"CDI_DISABLE_HOOKS": "all"}).cdi_disabled_hooks == {"create-symlinks", "update-ldcache"}
    s = _resolve({}, {"CDI_DISABLE_HOOKS": "update-ldcache,enable-cuda-compat"})
    assert s.cdi_disabled_hooks == {"update-ldcache"} and "enable-cuda-compat" in s.warnings[0]


def test_gfd_keys_are_warned_about() -> None:
    s = _resolve({"flags": {"gfd": {"oneshot": True}, "useNodeFeatureAPI": True}})
    assert [w.split(" ")[0] for w in s.warnings] == ["flags.gfd", "flags.useNodeFeatureAPI"]


# internal/plugin/server.go getAllocateResponse: NVIDIA_GDRCOPY and the IMEX channel per strategy.
def test_gdrcopy_and_imex_in_answers(nvidia_node: Any, tmp_path: Path) -> None:
    channels = tmp_path / "node/dev/nvidia-caps-imex-channels"
    channels.mkdir(parents=True)
    (channels / "channel0").symlink_to("/dev/null")  # a character device
    node = nvidia_node(machines.recorded_h100(), {"flags": {"gdrcopyEnabled": True}, "passDeviceSpecs": True,
                                                  "deviceListStrategy": ["envvar", "volume-mounts"],
                                                  "imex": {"channelIDs": [0]}})
    [gpu] = node.devices(GPU, 1)
    answer = node.allocate(GPU, gpu)
    assert answer.envs["NVIDIA_GDRCOPY"] == "enabled" and answer.envs["NVIDIA_IMEX_CHANNELS"] == "0"
    assert "/var/run/nvidia-container-devices/imex/0" in [m.container_path for m in answer.mounts]
    assert answer.devices[-1].container_path == "/dev/nvidia-caps-imex-channels/channel0"


def test_imex_channel_missing(nvidia_node: Any, caplog: pytest.LogCaptureFixture) -> None:
    node = nvidia_node(machines.recorded_h100(), {"imex": {"channelIDs": [0]}})
    [gpu] = node.devices(GPU, 1)
    assert "NVIDIA_IMEX_CHANNELS" not in node.allocate(GPU, gpu).envs
    assert "ignoring requested IMEX channel channel0" in caplog.text


def test_required_imex_channel_missing_fails_the_driver(nvidia_node: Any, kubelet: Any) -> None:
    node = nvidia_node(machines.recorded_h100(), {"imex": {"channelIDs": [0], "required": True}})
    kubelet.wait_for(lambda: node.host.statuses["nvidia"].state == "failed", 10, "the driver to fail")
    assert "requested IMEX channel channel0 does not exist" in node.host.statuses["nvidia"].reason


def test_sharing_devices_name_uuids_as_nvidia_checks_them() -> None:
    rules = _resolve({"sharing": {"timeSlicing": {"resources": [{"name": "gpu", "replicas": 2,
                                                                 "devices": [0, "1:0", UUID]}]}}}).replica_rules
    assert rules[0].devices == ("0", "1:0", UUID)


def test_logging_is_quiet_for_a_plain_config(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert _resolve({"migStrategy": "mixed"}).warnings == ()
