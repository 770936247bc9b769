"""Driver API 1.4: what each GPU and MIG device tells DRA's scheduler (attributes and capacity).

The recorded H100's NVML answers (data/h100_nvml_snapshot.json) give the expected values; every
device of every fake machine, in device-plugin and DRA mode, keeps to DRA's rules; the facts are
read once per discovery, not per poll; what NVML cannot tell is left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from multidp import Device, SemVer
from multidp.testing import attribute_problems as all_problems
from multidp.testing import create_driver

from multidp_nvidia import machines
from multidp_nvidia.describe import version
from multidp_nvidia.facts import compute_capability, cuda_version, pcie_root
from multidp_nvidia.fake_nvml import FakeMachine, FakeNvml
from multidp_nvidia.plugin import NvidiaPlugin

FACT_CALLS = ("nvmlDeviceGetBrand", "nvmlDeviceGetArchitecture", "nvmlDeviceGetCudaComputeCapability")


def scanned(machine: FakeMachine, tmp_path: Path, section: dict[str, Any] | None = None,
            polls: int = 1) -> tuple[dict[str, list[Device]], FakeNvml]:
    """The devices the driver serves for ``machine`` after ``polls`` scans, and its fake NVML."""
    roots = machines.write_host_files(machine, tmp_path / "node")
    fake = FakeNvml(machine)
    config = {"procRoot": str(roots["proc"]), "containerDriverRoot": str(roots["driver"]), **(section or {})}
    driver = create_driver(NvidiaPlugin(fake), config, name="nvidia", sysfs_root=roots["sys"], dev_root=roots["dev"])
    try:
        for _ in range(polls - 1):
            driver.scan()
        return {resource: list(devices) for resource, devices in driver.scan().items()}, fake
    finally:
        driver.close()


def test_the_recorded_h100_described_as_nvml_answered(tmp_path: Path) -> None:
    [gpu] = scanned(machines.recorded_h100(), tmp_path)[0]["nvidia.com/gpu"]
    snapshot = machines.load_snapshot()["devices"][0]
    assert dict(gpu.attributes) == {
        "type": "gpu",
        "uuid": snapshot["uuid"],
        "productName": "NVIDIA H100 80GB HBM3",
        "brand": "Nvidia",  # NVML_BRAND_NVIDIA (14)
        "architecture": "Hopper",  # NVML_DEVICE_ARCH_HOPPER (9)
        "cudaComputeCapability": SemVer("9.0.0"),
        "driverVersion": SemVer("580.159.4"),  # 580.159.04 without its leading zero
        "cudaDriverVersion": SemVer("13.0.0"),  # NVML's 13000
        "index": 0,
        "resource.kubernetes.io/pciBusID": "0000:00:06.0",  # NVML's 00000000:00:06.0
        "resource.kubernetes.io/pcieRoot": "pci0000:00",  # /sys/devices/pci0000:00/0000:00:06.0
    }
    assert dict(gpu.capacity) == {"memory": snapshot["memory_total"]}
    assert all_problems([gpu]) == []


def test_mig_devices_describe_themselves_and_their_gpu(tmp_path: Path) -> None:
    served = scanned(machines.mig_mixed(), tmp_path, {"migStrategy": "mixed"})[0]
    first = served["nvidia.com/mig-3g.40gb"][0]
    assert first.attributes["type"] == "mig" and first.attributes["uuid"] == first.id
    assert first.attributes["parentUUID"] == first.info["gpu"] == "GPU-00000010-1111-2222-3333-000000000010"
    assert first.attributes["profile"] == "3g.40gb" and first.attributes["migIndex"] == 0
    assert first.attributes["index"] == 0  # its GPU's
    assert first.capacity == {"memory": 40192 * 1024 * 1024}  # the 3g.40gb instance's memorySizeMB
    # The GPU's facts and PCI place are inherited.
    assert first.attributes["architecture"] == "Hopper"
    assert first.attributes["cudaComputeCapability"] == SemVer("9.0.0")
    assert first.attributes["resource.kubernetes.io/pciBusID"] == "0000:18:00.0"
    assert first.attributes["resource.kubernetes.io/pcieRoot"] == "pci0000:00"
    small = served["nvidia.com/mig-1g.10gb.me"][0]
    assert small.attributes["profile"] == "1g.10gb+me" and small.attributes["index"] == 1
    assert small.attributes["migIndex"] == 1 and small.capacity == {"memory": 9856 * 1024 * 1024}
    whole = served["nvidia.com/gpu"][0]  # GPU 2 has no MIG
    assert whole.attributes["type"] == "gpu" and whole.attributes["index"] == 2
    assert "parentUUID" not in whole.attributes and "profile" not in whole.attributes


def test_each_gpu_names_its_own_root_complex(tmp_path: Path) -> None:
    gpus = scanned(machines.nvlink8(), tmp_path)[0]["nvidia.com/gpu"]
    roots = [g.attributes["resource.kubernetes.io/pcieRoot"] for g in gpus]
    assert roots == ["pci0000:00"] * 4 + ["pci0000:80"] * 4
    assert [g.attributes["resource.kubernetes.io/pciBusID"] for g in gpus][:2] == ["0000:18:00.0", "0000:2a:00.0"]


def test_the_facts_are_read_at_discovery_not_at_each_poll(tmp_path: Path) -> None:
    _, fake = scanned(machines.nvlink8(), tmp_path, polls=5)
    assert {call: fake.calls[call] for call in FACT_CALLS} == {call: 8 for call in FACT_CALLS}
    assert fake.calls["nvmlSystemGetCudaDriverVersion"] == 1


def test_what_nvml_cannot_tell_is_left_out(tmp_path: Path) -> None:
    machine = machines.recorded_h100()
    gpu = machine.gpus[0]
    gpu.brand, gpu.architecture, gpu.compute_capability, gpu.pcie_root = None, 99, None, None
    machine.cuda_driver_version, machine.driver_version = None, "r580_00-custom"
    [device] = scanned(machine, tmp_path)[0]["nvidia.com/gpu"]
    assert device.healthy  # a fact missing is no fault of the GPU
    assert set(device.attributes) == {"type", "uuid", "productName", "driverVersion", "index",
                                      "resource.kubernetes.io/pciBusID"}
    assert device.attributes["driverVersion"] == "r580_00-custom"  # not a version: kept as a string
    assert all_problems([device]) == []


def test_a_product_name_too_long_for_dra_is_left_out(tmp_path: Path) -> None:
    machine = machines.recorded_h100()
    machine.gpus[0].name = "NVIDIA " + "Very Long Engineering Sample " * 3
    [device] = scanned(machine, tmp_path)[0]["nvidia.com/gpu"]
    assert "productName" not in device.attributes and device.info["model"] == machine.gpus[0].name


MACHINES = {
    "h100": (machines.recorded_h100, {}),
    "nvlink8": (machines.nvlink8, {}),
    "mig-mixed": (machines.mig_mixed, {"migStrategy": "mixed"}),
    "mig-single": (machines.mig_uniform, {"migStrategy": "single"}),
    "mig-none": (machines.mig_mixed, {"migStrategy": "none"}),
    "timeslice": (machines.nvlink8, {"sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu",
                                                                                 "replicas": 4}]}}}),
}


CASES = [(name, "device-plugin") for name in MACHINES] + [(name, "dra") for name in MACHINES if name != "timeslice"]


@pytest.mark.parametrize(("name", "frontend"), CASES)  # replicas are refused in DRA mode
def test_every_device_keeps_to_dras_rules(tmp_path: Path, name: str, frontend: str) -> None:
    build, section = MACHINES[name]
    if frontend == "dra":
        section = {**section, "frontend": "dra"}
    served = scanned(build(), tmp_path, section)[0]
    devices = [d for items in served.values() for d in items]
    assert devices and all(d.attributes and d.capacity for d in devices)
    assert all_problems(devices) == []


@pytest.mark.parametrize(("text", "expected"), [
    ("550.54.15", SemVer("550.54.15")),
    ("580.159.04", SemVer("580.159.4")),
    ("550.54", SemVer("550.54.0")),
    ("560", SemVer("560.0.0")),
    ("535.104.05 ", SemVer("535.104.5")),
    ("1.2.3.4", "1.2.3.4"),
    ("r580_00", "r580_00"),
    ("", ""),
])
def test_driver_versions(text: str, expected: SemVer | str) -> None:
    assert version(text) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (12040, "12.4.0"), (13000, "13.0.0"), (12090, "12.9.0"), (11080, "11.8.0"), (0, ""), (None, ""), (True, ""),
])
def test_cuda_driver_versions(value: object, expected: str) -> None:
    assert cuda_version(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ((9, 0), "9.0.0"), ((8, 6), "8.6.0"), ((10, 0), "10.0.0"), (None, ""), ((9,), ""), (("9", "0"), ""),
])
def test_compute_capabilities(value: object, expected: str) -> None:
    assert compute_capability(value) == expected


@pytest.fixture
def sysfs(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "sys"
    (root / "bus/pci/devices").mkdir(parents=True)
    yield root


def test_the_root_complex_is_where_sysfs_puts_the_device(sysfs: Path) -> None:
    log = logging.getLogger("test")
    behind_a_switch = sysfs / "devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0/0000:3c:00.0"
    behind_a_switch.mkdir(parents=True)
    (sysfs / "bus/pci/devices/0000:3c:00.0").symlink_to("../../../devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0"
                                                        "/0000:3c:00.0")
    assert pcie_root(sysfs, "0000:3c:00.0", log) == "pci0000:3a"
    (sysfs / "bus/pci/devices/0000:5d:00.0").mkdir()  # a flat tree: no root to tell
    assert pcie_root(sysfs, "0000:5d:00.0", log) == ""
    assert pcie_root(sysfs, "0000:99:00.0", log) == ""  # no such device
    (sysfs / "bus/pci/devices/0000:77:00.0").symlink_to("0000:77:00.0")  # a loop
    assert pcie_root(sysfs, "0000:77:00.0", log) == ""


def test_the_rule_checker_sees_each_broken_rule() -> None:
    crowded = {f"fact{n}": n for n in range(31)}
    device = Device("GPU-x", attributes={"productName": "x" * 65, "9lives": 1, "example.com/ok": True,
                                         "Bad_Domain.com/x": 1, "cudaDriverVersion": SemVer("12.4"),
                                         "float": 1.5, "huge": 2**64},  # type: ignore[dict-item]
                    capacity={"memory": "80 GiB", "cores": -1, "slots": True})
    found = all_problems([device, Device("GPU-y", attributes=crowded)])
    for words in ("'productName': a string must have 1 to 64 bytes", "'9lives': not a qualified name",
                  "'Bad_Domain.com/x': not a qualified name", "'12.4' is not a semantic version",
                  "'float': a float", "'huge': 18446744073709551616 is beyond 64 bits",
                  "capacity 'memory': '80 GiB' is not a quantity", "capacity 'cores': -1",
                  "capacity 'slots': True", "GPU-y: 31 attributes and capacities, over 30"):
        assert any(words in problem for problem in found), (words, found)
    assert not any("example.com/ok" in problem for problem in found)
    assert len(found) == 10
