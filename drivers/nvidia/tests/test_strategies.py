"""Device-list strategies (CDI included), host-path roots, device nodes and malformed node files."""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import Any

import grpc
import pytest

from multidp_nvidia import machines

from .elf_files import write_elf_library
from .ld_cache_files import X86_64_LIBC6, write_ld_cache

GPU = "nvidia.com/gpu"
KIND = "k8s.device-plugin.nvidia.com/gpu"


def test_cdi_cri_names_devices_and_the_host_writes_the_spec(nvidia_node: Any) -> None:
    machine = machines.nvlink8()
    node = nvidia_node(machine, {"deviceListStrategy": "cdi-cri", "passDeviceSpecs": True})
    ids = list(node.devices(GPU, 8))
    answer = node.allocate(GPU, ids[0], ids[3])
    assert [c.name for c in answer.cdi_devices] == [f"{KIND}={ids[0]}", f"{KIND}={ids[3]}"]
    assert dict(answer.envs) == {} and dict(answer.annotations) == {}
    declared = node.host.table.endpoints[GPU].snapshot.by_id  # what the host marks while it cannot write the spec
    assert [declared[i].cdi_devices for i in (ids[0], ids[3])] == [(f"{KIND}={ids[0]}",), (f"{KIND}={ids[3]}",)]
    spec_file = node.host.cdi.file_for("nvidia", KIND)
    spec = json.loads(spec_file.read_text())
    assert spec["kind"] == KIND
    by_name = {d["name"]: d for d in spec["devices"]}
    assert by_name[ids[3]]["containerEdits"]["deviceNodes"][0]["path"] == "/dev/nvidia3"
    mounts = [m["containerPath"] for m in spec["containerEdits"]["mounts"]]
    assert f"/usr/lib/x86_64-linux-gnu/libcuda.so.{machine.driver_version}" in mounts
    assert "/usr/lib/x86_64-linux-gnu/libcuda.so.1" in mounts
    assert [n["path"] for n in spec["containerEdits"]["deviceNodes"]] == [
        "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]


def test_cdi_annotations_use_nvidias_key_format(nvidia_node: Any) -> None:
    node = nvidia_node(machines.nvlink8(), {"deviceListStrategy": ["envvar", "cdi-annotations"],
                                            "deviceIDStrategy": "index"})
    ids = list(node.devices(GPU, 8))
    answer = node.allocate(GPU, ids[6])
    assert dict(answer.envs) == {"NVIDIA_VISIBLE_DEVICES": "6"}
    [(key, value)] = answer.annotations.items()
    prefix = "cdi.k8s.io/nvidia-device-plugin_"
    assert key.startswith(prefix) and len(key) == len(prefix) + 36  # a fresh UUID per answer, as NVIDIA
    assert value == f"{KIND}=6"
    assert list(answer.cdi_devices) == []


def test_cdi_spec_that_cannot_be_built_fails_only_cdi_allocations(nvidia_node: Any,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    node = nvidia_node(machines.nvlink8(), {"deviceListStrategy": "cdi-cri"}, driver_files=False)
    ids = list(node.devices(GPU, 8))
    # Still registered and served, but Unhealthy from the first list on: every answer names the spec.
    assert all(h == "Unhealthy" for h, _ in node.devices(GPU).values())
    reason = node.host.table.endpoints[GPU].snapshot.by_id[ids[0]].reason
    assert reason.startswith(f"needs CDI device {KIND}={ids[0]}, but ") and "containerDriverRoot" in reason
    error = node.allocate_error(GPU, ids[0])
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "libcuda.so.580.159.04" in error.details() and "containerDriverRoot" in error.details()
    assert "allocations that use CDI devices will fail" in caplog.text


SONAMES = {"libcuda.so": "libcuda.so.1", "libnvidia-ml.so": "libnvidia-ml.so.1",
           "libnvidia-nvvm.so": "libnvidia-nvvm.so.4", "libnvidia-gpucomp.so": None}  # None: the versioned name


def test_a_soname_outside_the_librarys_family_is_not_a_mount_path(nvidia_node: Any, tmp_path: Path) -> None:
    machine = machines.recorded_h100()
    lib_dir = tmp_path / "node/driver" / machines.LIB_DIR
    write_elf_library(lib_dir / f"libcuda.so.{machine.driver_version}", "..")
    write_elf_library(lib_dir / f"libnvidia-ml.so.{machine.driver_version}", "libother.so.3")
    node = nvidia_node(machine, {"deviceListStrategy": "cdi-cri"}, driver_files=False)
    [gpu] = node.devices(GPU, 1)
    node.allocate(GPU, gpu)
    mounts = json.loads(node.host.cdi.file_for("nvidia", KIND).read_text())["containerEdits"]["mounts"]
    assert [m["containerPath"].rsplit("/", 1)[1] for m in mounts][:4] == [
        f"libcuda.so.{machine.driver_version}", "libcuda.so.1", f"libnvidia-ml.so.{machine.driver_version}",
        "libnvidia-ml.so.1"]


def gke_style_driver(driver_root: Path, version: str, cache_ok: bool = True) -> None:
    """The driver under /usr/local/nvidia/lib64, known only to ld.so.cache (as on the H100 check machine),
    its libraries real ELF files with the sonames that machine showed."""
    lib64 = driver_root / "usr/local/nvidia/lib64"
    for lib, name in SONAMES.items():
        write_elf_library(lib64 / f"{lib}.{version}", name or f"{lib}.{version}")
        (lib64 / lib).symlink_to(name or f"{lib}.{version}")  # the host's dev link
        if name:
            (lib64 / name).symlink_to(f"{lib}.{version}")
    (driver_root / "usr/lib").mkdir(parents=True)
    (driver_root / "usr/lib/libcuda.so.1").touch()  # a stray soname link without the versioned file
    for tool, directory, mode in (("nvidia-smi", "usr/local/bin", 0o755), ("nvidia-debugdump", "usr/bin", 0o644),
                                  ("nvidia-debugdump", "bin", 0o755)):  # the one in usr/bin cannot be run
        (driver_root / directory).mkdir(parents=True, exist_ok=True)
        (driver_root / directory / tool).touch(mode)
    cache = driver_root / "etc/ld.so.cache"
    if not cache_ok:
        cache.parent.mkdir(parents=True)
        cache.write_bytes(b"not a cache")
        return
    write_ld_cache(cache, [("libcuda.so.1", "/usr/local/nvidia/../nvidia/lib64/libcuda.so.1", X86_64_LIBC6),
                           ("libcuda.so.1", "/usr/local/nvidia/lib64/libcuda.so.1", X86_64_LIBC6),
                           ("libcuda.so.1", "/usr/lib/libcuda.so.1", X86_64_LIBC6)] +
                   [(name or f"{lib}.{version}", f"/usr/local/nvidia/lib64/{name or f'{lib}.{version}'}", X86_64_LIBC6)
                    for lib, name in SONAMES.items() if lib != "libcuda.so"])


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the cache is written for x86-64")
def test_cdi_spec_finds_the_driver_where_ld_so_cache_says(nvidia_node: Any, tmp_path: Path) -> None:
    machine = machines.recorded_h100()
    gke_style_driver(tmp_path / "node/driver", machine.driver_version)
    node = nvidia_node(machine, {"deviceListStrategy": "cdi-cri", "nvidiaDriverRoot": "/host"}, driver_files=False)
    [gpu] = node.devices(GPU, 1)
    assert [c.name for c in node.allocate(GPU, gpu).cdi_devices] == [f"{KIND}={gpu}"]
    spec = json.loads(node.host.cdi.file_for("nvidia", KIND).read_text())
    version, folder = machine.driver_version, "/usr/local/nvidia/lib64"
    # each library at its versioned name and at its soname read from the file (.so.4 for nvvm; gpucomp's
    # soname is its versioned name, so it is mounted once); the entry with a ".." part was skipped
    assert [(m["containerPath"], m["hostPath"]) for m in spec["containerEdits"]["mounts"]] == [
        (f"{folder}/{name}", f"/host{folder}/{lib}.{version}")
        for lib in ("libcuda.so", "libnvidia-ml.so", "libnvidia-nvvm.so", "libnvidia-gpucomp.so")
        for name in dict.fromkeys((f"{lib}.{version}", SONAMES[lib] or f"{lib}.{version}"))] + [
        # tools: in NVIDIA's folder order, executable files only
        ("/usr/local/bin/nvidia-smi", "/host/usr/local/bin/nvidia-smi"),
        ("/bin/nvidia-debugdump", "/host/bin/nvidia-debugdump")]
    links, ldcache = (hook["args"] for hook in spec["containerEdits"]["hooks"])
    assert links[3:] == ["--link", f"libcuda.so.1::{folder}/libcuda.so",
                         "--link", f"libnvidia-ml.so.1::{folder}/libnvidia-ml.so",
                         "--link", f"libnvidia-nvvm.so.4::{folder}/libnvidia-nvvm.so",
                         "--link", f"libnvidia-gpucomp.so.{version}::{folder}/libnvidia-gpucomp.so"]
    assert ldcache[-3:] == ["update-ldcache", "--folder", folder]


def test_a_broken_ld_so_cache_is_named_when_the_driver_is_not_found(nvidia_node: Any, tmp_path: Path) -> None:
    machine = machines.recorded_h100()
    gke_style_driver(tmp_path / "node/driver", machine.driver_version, cache_ok=False)
    node = nvidia_node(machine, {"deviceListStrategy": ["envvar", "cdi-cri"]}, driver_files=False)
    [gpu] = node.devices(GPU, 1)
    error = node.allocate_error(GPU, gpu)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "etc/ld.so.cache: not an ld.so.cache" in error.details()


def test_a_broken_ld_so_cache_is_not_needed_when_the_fixed_folders_hold_the_driver(nvidia_node: Any,
                                                                                   tmp_path: Path) -> None:
    (tmp_path / "node/driver/etc").mkdir(parents=True)
    (tmp_path / "node/driver/etc/ld.so.cache").write_bytes(b"garbage")
    node = nvidia_node(machines.recorded_h100(), {"deviceListStrategy": "cdi-cri"})
    [gpu] = node.devices(GPU, 1)
    assert [c.name for c in node.allocate(GPU, gpu).cdi_devices] == [f"{KIND}={gpu}"]


def test_driver_and_dev_roots_prefix_host_paths(nvidia_node: Any) -> None:
    node = nvidia_node(machines.recorded_h100(), {"passDeviceSpecs": True, "deviceListStrategy": "volume-mounts",
                                                   "nvidiaDriverRoot": "/run/nvidia/driver"})
    [gpu] = node.devices(GPU, 1)
    answer = node.allocate(GPU, gpu)
    assert [(d.container_path, d.host_path) for d in answer.devices][-1] == (
        "/dev/nvidia0", "/run/nvidia/driver/dev/nvidia0")
    assert [(m.container_path, m.host_path) for m in answer.mounts] == [
        (f"/var/run/nvidia-container-devices/{gpu}", "/dev/null")]


def test_gds_and_mofed_envs(nvidia_node: Any) -> None:
    node = nvidia_node(machines.recorded_h100(), {"flags": {"gdsEnabled": True, "mofedEnabled": True}})
    [gpu] = node.devices(GPU, 1)
    assert dict(node.allocate(GPU, gpu).envs) == {"NVIDIA_VISIBLE_DEVICES": gpu, "NVIDIA_GDS": "enabled",
                                                  "NVIDIA_MOFED": "enabled"}


def test_modeset_node_is_passed_when_present(nvidia_node: Any) -> None:
    node = nvidia_node(machines.recorded_h100(), {"passDeviceSpecs": True})
    (node.roots["dev"] / "nvidia-modeset").write_text("")
    [gpu] = node.devices(GPU, 1)
    node.host.runners["nvidia"].scan_now()
    paths = [d.container_path for d in node.allocate(GPU, gpu).devices]
    assert paths == ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset",
                     "/dev/nvidia0"]


def test_vanished_device_node_makes_its_gpu_unhealthy_until_back(nvidia_node: Any,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    node = nvidia_node(machines.nvlink8(), {"pollInterval": 0.1})
    ids = list(node.devices(GPU, 8))
    (node.roots["dev"] / "nvidia3").unlink()
    node.wait_health(GPU, ids[3], "Unhealthy")
    assert "device node /dev/nvidia3 of " + ids[3] + " is missing" in caplog.text
    (node.roots["dev"] / "nvidia3").write_text("")
    node.wait_health(GPU, ids[3], "Healthy")


@pytest.mark.parametrize("content", ["banana\n", ""])
def test_malformed_numa_node_file_is_named_and_ignored(nvidia_node: Any, caplog: pytest.LogCaptureFixture,
                                                       content: str) -> None:
    caplog.set_level(logging.WARNING)
    machine = machines.nvlink8()
    node = nvidia_node(machine, {"pollInterval": 60})
    numa_file = node.roots["sys"] / "bus/pci/devices/0000:2a:00.0/numa_node"
    numa_file.write_text(content)
    node.host.reload(node.host.settings)  # the driver is created again and rediscovers
    node.kubelet.wait_devices(GPU, lambda v: v.devices.get(machine.gpus[1].uuid, ("", (0,)))[1] == ())
    assert str(numa_file) in caplog.text
    assert node.devices(GPU)[machine.gpus[1].uuid][0] == "Healthy"


def test_custom_cdi_annotation_prefix(nvidia_node: Any) -> None:
    node = nvidia_node(machines.recorded_h100(), {"flags": {"plugin": {"deviceListStrategy": "cdi-annotations",
                                                                         "cdiAnnotationPrefix": "example.com/"}}})
    [gpu] = node.devices(GPU, 1)
    [(key, value)] = node.allocate(GPU, gpu).annotations.items()
    assert key.startswith("example.com/nvidia-device-plugin_") and value == f"{KIND}={gpu}"
