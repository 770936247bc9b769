"""The createContainer hooks in the CDI spec: NVIDIA's hooks and args, the hook path NVIDIA's way, hooks off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from multidp import ConfigError, Mount

from multidp_nvidia import machines
from multidp_nvidia.cdi_hooks import cdi_hooks, hook_args, library_folders
from multidp_nvidia.config import NvidiaConfig
from multidp_nvidia.settings import DEFAULT_CDI_HOOK_PATH, resolve

GPU = "nvidia.com/gpu"
KIND = "k8s.device-plugin.nvidia.com/gpu"
LIBDIR = "/usr/lib/x86_64-linux-gnu"
CDI = {"deviceListStrategy": "cdi-cri"}


def written_spec(node: Any) -> dict[str, Any]:
    node.devices(GPU, 8)  # served: the first scan (and so the spec) is done
    return json.loads(node.host.cdi.file_for("nvidia", KIND).read_text())


def spec_hooks(node: Any) -> list[dict[str, Any]]:
    return written_spec(node)["containerEdits"].get("hooks", [])


def test_spec_carries_nvidias_hooks_with_nvidias_args(nvidia_node: Any) -> None:
    node = nvidia_node(machines.nvlink8(), CDI)
    assert spec_hooks(node) == [
        {"hookName": "createContainer", "path": "/usr/bin/nvidia-ctk",
         "args": ["nvidia-ctk", "hook", "create-symlinks", "--link", f"libcuda.so.1::{LIBDIR}/libcuda.so"]},
        {"hookName": "createContainer", "path": "/usr/bin/nvidia-ctk",
         "args": ["nvidia-ctk", "hook", "update-ldcache", "--folder", LIBDIR]},
    ]
    assert all("hooks" not in d["containerEdits"] for d in written_spec(node)["devices"])


def test_configured_hook_path_is_honoured(nvidia_node: Any) -> None:
    path = "/usr/local/nvidia/toolkit/nvidia-cdi-hook"  # not nvidia-ctk: no "hook" subcommand
    node = nvidia_node(machines.nvlink8(), {**CDI, "flags": {"plugin": {"nvidiaCTKPath": path}}})
    hooks = spec_hooks(node)
    assert [h["path"] for h in hooks] == [path, path]
    assert hooks[1]["args"] == ["nvidia-cdi-hook", "update-ldcache", "--folder", LIBDIR]


def test_empty_hook_path_writes_no_hooks_and_keeps_the_rest(nvidia_node: Any) -> None:
    node = nvidia_node(machines.nvlink8(), {**CDI, "nvidiaCTKPath": ""})
    spec = written_spec(node)
    assert "hooks" not in spec["containerEdits"]
    assert f"{LIBDIR}/libcuda.so.1" in [m["containerPath"] for m in spec["containerEdits"]["mounts"]]
    ids = list(node.devices(GPU, 8))
    assert [c.name for c in node.allocate(GPU, ids[0]).cdi_devices] == [f"{KIND}={ids[0]}"]


@pytest.mark.parametrize("var", ["NVIDIA_CDI_HOOK_PATH", "NVIDIA_CTK_PATH"])
def test_nvidias_variables_are_honoured(nvidia_node: Any, var: str) -> None:
    node = nvidia_node(machines.nvlink8(), CDI, environ={var: "/opt/nvidia/toolkit/nvidia-ctk"})
    assert {h["path"] for h in spec_hooks(node)} == {"/opt/nvidia/toolkit/nvidia-ctk"}
    assert spec_hooks(node)[1]["args"][:3] == ["nvidia-ctk", "hook", "update-ldcache"]


def test_multidp_variable_can_turn_hooks_off(nvidia_node: Any) -> None:
    node = nvidia_node(machines.nvlink8(), CDI, environ={"MULTIDP_NVIDIA_NVIDIA_CTK_PATH": ""})
    assert spec_hooks(node) == []


def _resolve(section: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Any:
    return resolve(msgspec.convert(section or {}, NvidiaConfig), environ or {})


def test_hook_path_precedence_and_default() -> None:
    assert _resolve().cdi_hook_path == DEFAULT_CDI_HOOK_PATH == "/usr/bin/nvidia-ctk"
    both = {"NVIDIA_CTK_PATH": "/a/nvidia-ctk", "NVIDIA_CDI_HOOK_PATH": "/b/nvidia-cdi-hook"}
    assert _resolve({}, both).cdi_hook_path == "/b/nvidia-cdi-hook"  # NVIDIA reads this one first
    assert _resolve({"flags": {"plugin": {"nvidiaCTKPath": "/c/nvidia-ctk"}}}, both).cdi_hook_path == "/c/nvidia-ctk"
    assert _resolve({"nvidiaCTKPath": ""}, both).cdi_hook_path == ""
    assert _resolve({}, {"NVIDIA_CDI_HOOK_PATH": ""}).cdi_hook_path == DEFAULT_CDI_HOOK_PATH  # empty: unset
    assert not _resolve({"flags": {"plugin": {"nvidiaCTKPath": "/x/y"}}}).warnings


def test_nvidia_file_key_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("version: v1\nflags:\n  plugin:\n    nvidiaCTKPath: /usr/local/nvidia/toolkit/nvidia-ctk\n")
    assert _resolve({"configFile": str(path)}).cdi_hook_path == "/usr/local/nvidia/toolkit/nvidia-ctk"


@pytest.mark.parametrize("value", ["nvidia-ctk", "/usr/bin/../tmp/x", "/usr/bin/"])
def test_hook_path_must_be_a_plain_absolute_program(value: str) -> None:
    with pytest.raises(ConfigError, match="nvidiaCTKPath"):
        _resolve({}, {"NVIDIA_CDI_HOOK_PATH": value})


def test_ldcache_folders_are_deduplicated_in_mount_order() -> None:
    version = "580.1"
    mounts = [Mount(f"{LIBDIR}/libcuda.so.{version}", "/h"), Mount(f"{LIBDIR}/libcuda.so.1", "/h"),
              Mount(f"/usr/lib64/libnvidia-cfg.so.{version}", "/h"), Mount("/usr/lib64/libnvidia-cfg.so.1", "/h"),
              Mount(f"{LIBDIR}/libnvidia-ml.so.{version}", "/h"), Mount("/usr/bin/nvidia-smi", "/h")]
    assert library_folders(mounts) == [LIBDIR, "/usr/lib64"]
    assert hook_args("/usr/bin/nvidia-cdi-hook", "update-ldcache", "--folder", LIBDIR) == [
        "nvidia-cdi-hook", "update-ldcache", "--folder", LIBDIR]


def test_host_dev_links_are_added_and_hooks_need_a_path(tmp_path: Path) -> None:
    version = "580.1"
    (tmp_path / LIBDIR.lstrip("/")).mkdir(parents=True)
    (tmp_path / LIBDIR.lstrip("/") / "libnvidia-ml.so").symlink_to("libnvidia-ml.so.1")
    mounts = [Mount(f"{LIBDIR}/{lib}.so.{v}", "/h") for lib in ("libcuda", "libnvidia-ml", "libnvidia-cfg")
              for v in (version, "1")]
    [links, ldcache] = cdi_hooks("/usr/bin/nvidia-ctk", mounts, version, tmp_path)
    assert links.args[3:] == ["--link", f"libcuda.so.1::{LIBDIR}/libcuda.so",
                              "--link", f"libnvidia-ml.so.1::{LIBDIR}/libnvidia-ml.so"]
    assert ldcache.args[2:] == ["update-ldcache", "--folder", LIBDIR]
    assert cdi_hooks("", mounts, version, tmp_path) == []
