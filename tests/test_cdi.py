"""CDI documents and the registry that checks them; hooks: the JSON the host writes for them, the names it
refuses, and the driver docs that cover them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import multidp
from multidp.model import CDI_HOOK_NAMES, CDIDeviceSpec, CDIHook, CDISpec, DeviceNode, Mount
from multidp.serving.cdi import CDI_VERSION, CDIRegistry, spec_document

DRIVER_DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-a-driver.md"
KIND = "example.com/widget"
LDCACHE = CDIHook("createContainer", "/usr/bin/nvidia-cdi-hook",
                  ["nvidia-cdi-hook", "update-ldcache", "--folder", "/usr/lib64"])


def test_common_and_device_hooks_are_written_in_cdi_shape() -> None:
    device_hook = CDIHook("startContainer", "/opt/bin/probe", ["probe", "--device", "w0"], {"DEBUG": "1"}, 5)
    spec = CDISpec(KIND, [CDIDeviceSpec("w0", [DeviceNode.same_path("/dev/w0")], hooks=[device_hook])],
                   common_hooks=[LDCACHE])
    doc = spec_document(spec)
    assert doc["containerEdits"] == {"hooks": [{
        "hookName": "createContainer", "path": "/usr/bin/nvidia-cdi-hook",
        "args": ["nvidia-cdi-hook", "update-ldcache", "--folder", "/usr/lib64"]}]}
    assert doc["devices"][0]["containerEdits"]["hooks"] == [{
        "hookName": "startContainer", "path": "/opt/bin/probe", "args": ["probe", "--device", "w0"],
        "env": ["DEBUG=1"], "timeout": 5}]
    assert doc["cdiVersion"] == CDI_VERSION  # hooks date from CDI 0.3.0: no newer version is needed


def test_hooks_default_to_none_so_other_specs_are_unchanged() -> None:
    spec = CDISpec(KIND, [CDIDeviceSpec("w0", [DeviceNode.same_path("/dev/w0")])])
    doc = spec_document(spec)
    assert "containerEdits" not in doc
    assert "hooks" not in doc["devices"][0]["containerEdits"]
    assert spec.common_hooks == () and spec.devices[0].hooks == ()


def test_hook_with_no_args_writes_only_name_and_path() -> None:
    doc = spec_document(CDISpec(KIND, [], common_hooks=[CDIHook("poststop", "/bin/cleanup")]))
    assert doc["containerEdits"]["hooks"] == [{"hookName": "poststop", "path": "/bin/cleanup"}]


@pytest.mark.parametrize("name", CDI_HOOK_NAMES)
def test_every_oci_stage_cdi_knows_is_accepted(name: str) -> None:
    doc = spec_document(CDISpec(KIND, [], common_hooks=[CDIHook(name, "/bin/true")]))
    assert doc["containerEdits"]["hooks"][0]["hookName"] == name


@pytest.mark.parametrize(("hook", "message"), [
    (CDIHook("preStart", "/bin/true"), "hook name 'preStart' is not one of prestart, createRuntime"),
    (CDIHook("createContainer", "bin/true"), "'bin/true' must be absolute"),
    (CDIHook("createContainer", "/bin/true", timeout=0), "timeout must be a positive number"),
    (CDIHook("createContainer", "/bin/true", env={"A=B": "c"}), "bad environment variable name 'A=B'"),
])
def test_bad_hooks_are_refused_by_name(hook: CDIHook, message: str) -> None:
    with pytest.raises(ValueError, match="CDI hook") as caught:
        spec_document(CDISpec(KIND, [], common_hooks=[hook]))
    assert message in str(caught.value)


def test_a_bad_hook_fails_only_that_drivers_cdi_and_says_why(tmp_path: Path) -> None:
    registry = CDIRegistry(tmp_path / "cdi")
    good = CDISpec(KIND, [CDIDeviceSpec("w0", [DeviceNode.same_path("/dev/w0")])], common_hooks=[LDCACHE])
    registry.publish("t", [good])
    written = json.loads(registry.file_for("t", KIND).read_text())
    assert written["containerEdits"]["hooks"][0]["args"][1] == "update-ldcache"
    assert registry.problem("t", [f"{KIND}=w0"]) is None
    registry.publish("t", [dataclasses.replace(good, common_hooks=[CDIHook("onStart", "/bin/true")])])
    problem = registry.problem("t", [f"{KIND}=w0"])
    assert problem is not None and "hook name 'onStart' is not one of" in problem
    registry.publish("u", [CDISpec("example.com/other", [CDIDeviceSpec("o0")])])
    assert registry.problem("u", ["example.com/other=o0"]) is None


def test_cdihook_is_exported_beside_cdispec() -> None:
    assert multidp.CDIHook is CDIHook and "CDIHook" in multidp.__all__


def test_driver_doc_covers_every_cdi_field() -> None:
    text = DRIVER_DOC.read_text()
    missing = [f"{cls.__name__}.{f.name}" for cls in (CDISpec, CDIDeviceSpec, CDIHook)
               for f in dataclasses.fields(cls) if f.name not in text]
    assert missing == [], f"CDI fields missing from {DRIVER_DOC.name}: {missing}"
    assert all(name in text for name in CDI_HOOK_NAMES)


def test_cdi_document_and_registry(tmp_path: Path) -> None:
    spec = CDISpec("example.com/widget", [CDIDeviceSpec("w0", [DeviceNode("/dev/w0", "/dev/w0", "rw")],
                                                        {"W": "0"}, [Mount("/c", "/h", read_only=True)])],
                   common_device_nodes=[DeviceNode.same_path("/dev/wctl")])
    doc = spec_document(spec)
    assert doc["devices"][0]["containerEdits"] == {
        "deviceNodes": [{"path": "/dev/w0", "hostPath": "/dev/w0", "permissions": "rw"}],
        "env": ["W=0"],
        "mounts": [{"hostPath": "/h", "containerPath": "/c", "options": ["ro", "nosuid", "nodev", "bind"]}],
    }
    assert doc["containerEdits"]["deviceNodes"][0]["path"] == "/dev/wctl"
    registry = CDIRegistry(tmp_path / "cdi")
    registry.publish("t", [spec])
    written = json.loads(registry.file_for("t", "example.com/widget").read_text())
    assert written == doc
    assert registry.problem("t", ["example.com/widget=w0"]) is None
    assert "holds example.com/widget=w9" in registry.problem("t", ["example.com/widget=w9"])
    assert registry.problem("t", ["other.com/gpu=0"]) is None  # another tool's kind: not ours to check
    registry.publish("t", [CDISpec("Bad Kind", [])])
    assert "is not vendor/class" in registry.problem("t", ["example.com/widget=w0"])
