"""DRA mode (``frontend: dra``): answers complete as CDI, specs buildable under --simulate, and the
config that cannot work through DRA refused, naming the key where its value was set."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from multidp import AllocationRequest, CDISpec, ConfigError, ContainerAllocation
from multidp.testing import check_config, create_driver

import multidp_nvidia.plugin as plugin
from multidp_nvidia import machines
from multidp_nvidia.fake_nvml import FakeNvml
from multidp_nvidia.plugin import NvidiaPlugin

KIND = "k8s.device-plugin.nvidia.com/gpu"
POD_FILE = "/etc/nvidia-device-plugin/config.yaml"


@pytest.fixture
def simulate_in() -> Iterator[Path]:
    """A short folder for the simulation (its sockets and files), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="mdp", dir="/tmp") as folder:
        yield Path(folder)


def _check_cdi_complete(answer: ContainerAllocation, specs: list[CDISpec]) -> None:
    """Only CDI device names, each a device of one of ``specs``: nothing a runtime would have to act on."""
    assert answer.annotations == {} and answer.cdi_annotation_key is None
    assert answer.envs == {} and answer.mounts == [] and answer.device_nodes == []
    assert answer.cdi_devices and answer.cdi_field
    declared = {spec.qualified_name(device.name) for spec in specs for device in spec.devices}
    assert set(answer.cdi_devices) <= declared, f"{answer.cdi_devices} not all in {sorted(declared)}"


@pytest.mark.parametrize(("section", "named"), [
    ({}, lambda device: device.id),  # deviceIDStrategy uuid (the default)
    ({"deviceIDStrategy": "index"}, lambda device: device.info["index"]),
])
def test_simulated_answers_name_only_the_drivers_cdi_devices(simulate_in: Path, section: dict[str, Any],
                                                              named: Any) -> None:
    driver = create_driver(plugin, {"frontend": "dra", **section}, name="nvidia", simulate_in=simulate_in)
    try:
        served = driver.scan()["nvidia.com/gpu"]
        first, third = served[0], served[2]
        for device in (first, third):  # declared as in the cdi modes: Unhealthy while the spec is unwritten
            assert len(device.cdi_devices) == 1 and device.cdi_devices[0].startswith(f"{KIND}=")
        answer = driver.allocate(AllocationRequest("nvidia.com/gpu", (first.id, third.id), (first.id, third.id),
                                                   claim_uid="3f2a", request_name="gpus"))
        specs = list(driver.cdi_specs())
        _check_cdi_complete(answer, specs)
        assert answer.cdi_devices == [f"{KIND}={named(first)}", f"{KIND}={named(third)}"]
        assert first.cdi_devices == (f"{KIND}={named(first)}",)
        # The spec the names point into carries the driver's libraries (found in the simulated driver root).
        [spec] = specs
        mounts = [m.container_path for m in spec.common_mounts]
        assert any(p.startswith("/usr/lib/x86_64-linux-gnu/libcuda.so.") for p in mounts)
    finally:
        driver.close()


def test_simulated_mig_devices_are_cdi_devices_too(simulate_in: Path) -> None:
    driver = create_driver(plugin, {"frontend": "dra", "simulatedMachine": "mig", "migStrategy": "mixed"},
                           name="nvidia", simulate_in=simulate_in)
    try:
        resources = driver.scan()
        mig = next(r for r in resources if "/mig-" in r)
        device = resources[mig][0]
        answer = driver.allocate(AllocationRequest(mig, (device.id,), (device.id,), claim_uid="u", request_name="r"))
        specs = list(driver.cdi_specs())
        _check_cdi_complete(answer, specs)
        assert answer.cdi_devices == [f"{KIND}={device.id}"]
        [edits] = [d for s in specs for d in s.devices if s.qualified_name(d.name) == answer.cdi_devices[0]]
        assert any("nvidia-caps" in n.container_path for n in edits.device_nodes)  # the MIG capability nodes
    finally:
        driver.close()


def test_imex_channels_travel_as_cdi_devices_too(tmp_path: Path) -> None:
    machine = machines.nvlink8()
    roots = machines.write_host_files(machine, tmp_path / "node")
    channel = roots["dev"] / "nvidia-caps-imex-channels/channel0"
    channel.parent.mkdir(parents=True)
    channel.symlink_to("/dev/null")  # a character device, as the channel is
    section = {"frontend": "dra", "procRoot": str(roots["proc"]), "containerDriverRoot": str(roots["driver"]),
               "imex": {"channelIDs": [0]}}
    driver = create_driver(NvidiaPlugin(FakeNvml(machine)), section, name="nvidia", sysfs_root=roots["sys"],
                           dev_root=roots["dev"])
    try:
        device = driver.scan()["nvidia.com/gpu"][0]
        answer = driver.allocate(AllocationRequest("nvidia.com/gpu", (device.id,), (device.id,), "c", "r"))
        _check_cdi_complete(answer, list(driver.cdi_specs()))
        assert answer.cdi_devices == [f"{KIND}={device.id}", "k8s.device-plugin.nvidia.com/imex-channel=0"]
    finally:
        driver.close()


def _check(section: dict[str, Any], environ: dict[str, str] | None = None,
           files: dict[str, Path] | None = None) -> list[str]:
    """``multidp config check`` for the nvidia driver in DRA mode; its warnings."""
    return check_config(NvidiaPlugin(FakeNvml(machines.without_nvml())), {"frontend": "dra", **section},
                        name="nvidia", environ=environ, files=files)


@pytest.mark.parametrize(("section", "environ", "key", "words"), [
    ({"deviceListStrategy": "envvar"}, {}, "drivers.nvidia.deviceListStrategy",
     "envvar needs NVIDIA's container runtime, which DRA pods do not run under; use cdi-cri or leave it unset"),
    ({"deviceListStrategy": ["cdi-cri", "volume-mounts"]}, {}, "drivers.nvidia.deviceListStrategy",
     "volume-mounts needs NVIDIA's container runtime"),
    ({"flags": {"plugin": {"deviceListStrategy": "cdi-annotations"}}}, {},
     "drivers.nvidia.flags.plugin.deviceListStrategy", "cdi-annotations answers with an annotation"),
    ({}, {"DEVICE_LIST_STRATEGY": "envvar"}, "DEVICE_LIST_STRATEGY", "envvar needs NVIDIA's container runtime"),
    ({"passDeviceSpecs": True}, {}, "drivers.nvidia.passDeviceSpecs", "the driver's CDI spec carries them"),
    ({}, {"PASS_DEVICE_SPECS": "true"}, "PASS_DEVICE_SPECS", "leave it unset with frontend: dra or false"),
    ({"flags": {"plugin": {"cdiAnnotationPrefix": "example.com/"}}}, {},
     "drivers.nvidia.flags.plugin.cdiAnnotationPrefix", "cdi-annotations strategy"),
    ({"flags": {"gdsEnabled": True}}, {}, "drivers.nvidia.flags.gdsEnabled", "NVIDIA_GDS=enabled"),
    ({}, {"MOFED_ENABLED": "1"}, "MOFED_ENABLED", "NVIDIA_MOFED=enabled"),
    ({}, {"GDRCOPY_ENABLED": "true"}, "GDRCOPY_ENABLED", "NVIDIA_GDRCOPY=enabled"),
    ({"sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}}}, {},
     "drivers.nvidia.sharing.timeSlicing.resources", "sharing a ResourceClaim"),
    ({"sharing": {"mps": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}}}, {},
     "drivers.nvidia.sharing.mps.resources", "MPS replicas"),
    ({}, {"SHARED_DEVICES_ALLOCATION_POLICY": "packed"}, "SHARED_DEVICES_ALLOCATION_POLICY",
     "GetPreferredAllocation"),
    ({"replicaPolicy": "pack"}, {}, "drivers.nvidia.replicaPolicy", "GetPreferredAllocation"),
])
def test_what_cannot_work_through_dra_is_refused_naming_its_key(section: dict[str, Any], environ: dict[str, str],
                                                                key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _check(section, environ)
    assert caught.value.key == key
    assert words in caught.value.message


def test_a_key_in_nvidias_file_is_named_with_the_file(tmp_path: Path) -> None:
    local = tmp_path / "nvidia.yaml"
    local.write_text("version: v1\nflags:\n  plugin:\n    deviceListStrategy: envvar\n    passDeviceSpecs: true\n")
    with pytest.raises(ConfigError) as caught:
        _check({"configFile": POD_FILE}, files={POD_FILE: local})
    assert caught.value.key == "flags.plugin.deviceListStrategy"
    assert caught.value.source is not None and POD_FILE in caught.value.source
    # multidp's own section wins over the file, so a value it sets is the one judged
    _check({"configFile": POD_FILE, "deviceListStrategy": "cdi-cri", "passDeviceSpecs": False},
           files={POD_FILE: local})


@pytest.mark.parametrize(("section", "environ"), [
    ({}, {}),
    ({"deviceListStrategy": "cdi-cri", "passDeviceSpecs": False}, {"GDS_ENABLED": "false"}),
    ({"flags": {"gdsEnabled": False, "plugin": {"deviceListStrategy": ["cdi-cri"]}}, "migStrategy": "mixed",
      "deviceIDStrategy": "index", "imex": {"channelIDs": [0]}, "health": {"recoverAfter": 60}}, {}),
])
def test_unset_or_dra_compatible_keys_are_taken(section: dict[str, Any], environ: dict[str, str]) -> None:
    assert _check(section, environ) == []


def test_device_plugin_mode_keeps_its_defaults(simulate_in: Path) -> None:
    driver = create_driver(plugin, {}, name="nvidia", simulate_in=simulate_in)
    try:
        device = driver.scan()["nvidia.com/gpu"][0]
        answer = driver.allocate(AllocationRequest("nvidia.com/gpu", (device.id,), (device.id,)))
        assert answer.envs == {"NVIDIA_VISIBLE_DEVICES": device.id} and answer.cdi_devices == []
        assert device.cdi_devices == () and list(driver.cdi_specs()) == []
    finally:
        driver.close()
