"""``multidp dra classes``: one DeviceClass per resource of each driver served through DRA, valid for the API."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_cli import env_with, run

from multidp.cli.draclasses import class_name, selector
from multidp.names import DNS1123_SUBDOMAIN, resource_name_problem
from multidp.testing import fake_distribution

DRA_NAME = "widget.example.com"
WIDGET, SHARED = "example.com/widget", "example.com/widget-shared"

# A driver API 1.4 driver with a resource whose name is fine for the kubelet but too long for the attribute
# the classes select on, one the kubelet refuses, and one that works.
ODD_PLUGIN = '''
from multidp import Device, Driver, hookimpl

MULTIDP_DRIVER_API = "1.4"

class Odd(Driver):
    def scan(self):
        return {"example.com/" + "x" * 60: [Device("a")], "example.com/bad_": [Device("b")],
                "example.com/card": [Device("c")]}

@hookimpl
def multidp_create_driver(context):
    return Odd()
'''

BROKEN_PLUGIN = '''
from multidp import Driver, hookimpl

MULTIDP_DRIVER_API = "1.4"

class Broken(Driver):
    def scan(self):
        raise RuntimeError("no hardware answers")

@hookimpl
def multidp_create_driver(context):
    return Broken()
'''

OLD_PLUGIN = '''
from multidp import Device, Driver, hookimpl

MULTIDP_DRIVER_API = "1.2"

class Old(Driver):
    def scan(self):
        return {"example.com/old": [Device("a")]}

@hookimpl
def multidp_create_driver(context):
    return Old()
'''


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """The sample driver, and three of ours: odd resource names, a scan that fails, an old driver API."""
    site = tmp_path / "site"
    site.mkdir()
    fake_distribution(site, "multidp-sample", {"sample": "multidp.testing.sample_plugin"})
    for name, text in (("odd", ODD_PLUGIN), ("broken", BROKEN_PLUGIN), ("old", OLD_PLUGIN)):
        fake_distribution(site, f"multidp-{name}", {name: f"{name}_plugin"})
        (site / f"{name}_plugin.py").write_text(text)
    return site


def classes(site: Path, tmp_path: Path, config: dict[str, Any], *args: str, code: int = 0) -> tuple[Any, str]:
    """Run the command with ``config``; (its output parsed: YAML documents, or the JSON list; stderr)."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run(["dra", "classes", "--config", str(path), *args], env_with(site))
    assert result.returncode == code, result.stdout + result.stderr
    if "--json" in args:
        return json.loads(result.stdout), result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None], result.stderr


SAMPLE_DRA = {"drivers": {"sample": {"frontend": "dra", "draDriverName": DRA_NAME}}}


def test_one_class_per_resource_selecting_it_and_naming_it_as_extended_resource(site: Path, tmp_path: Path) -> None:
    printed, _ = classes(site, tmp_path, SAMPLE_DRA, "--drivers", "sample")
    assert [c["metadata"]["name"] for c in printed] == ["widget.example.com", "widget-shared.example.com"]
    for device_class, resource in zip(printed, [WIDGET, SHARED], strict=True):
        assert device_class["apiVersion"] == "resource.k8s.io/v1" and device_class["kind"] == "DeviceClass"
        assert device_class["metadata"]["labels"] == {"app.kubernetes.io/part-of": "multidp",
                                                      "multidp.io/driver": "sample"}
        assert device_class["spec"] == {
            "selectors": [{"cel": {"expression": f'device.driver == "{DRA_NAME}" && '
                                                 f'device.attributes["multidp.io"].resource == "{resource}"'}}],
            "extendedResourceName": resource,
        }


def test_json_is_the_same_classes_as_a_list(site: Path, tmp_path: Path) -> None:
    as_yaml, _ = classes(site, tmp_path, SAMPLE_DRA, "--drivers", "sample")
    as_json, _ = classes(site, tmp_path, SAMPLE_DRA, "--drivers", "sample", "--json")
    assert isinstance(as_json, list) and as_json == as_yaml


def test_a_driver_on_the_device_plugin_prints_nothing(site: Path, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("drivers:\n  sample:\n    enabled: true\n")
    result = run(["dra", "classes", "--drivers", "sample", "--config", str(path)], env_with(site))
    assert (result.returncode, result.stdout) == (0, "")
    assert "no driver is configured with frontend: dra" in result.stderr
    printed, _ = classes(site, tmp_path, {"drivers": {"sample": {}}}, "--drivers", "sample", "--json")
    assert printed == []


def test_a_variable_turns_dra_mode_on_for_the_command(site: Path, tmp_path: Path) -> None:
    """For a driver moved to DRA by node label only: MULTIDP_<NAME>_FRONTEND=dra prints its classes."""
    result = run(["dra", "classes", "--drivers", "sample", "--json"], env_with(site, MULTIDP_SAMPLE_FRONTEND="dra"))
    assert result.returncode == 0, result.stderr
    assert [c["spec"]["extendedResourceName"] for c in json.loads(result.stdout)] == [WIDGET, SHARED]
    assert 'device.driver == "sample.multidp.io"' in json.loads(result.stdout)[0]["spec"]["selectors"][0]["cel"][
        "expression"], "the default DRA name, <driver>.multidp.io"


def test_a_driver_disabled_in_config_still_gets_its_classes(site: Path, tmp_path: Path) -> None:
    """The base's config turns every driver off until a node label turns it on; the classes are cluster-wide."""
    config = {"drivers": {"default": {"enabled": False}, "sample": {"frontend": "dra", "draDriverName": DRA_NAME}}}
    printed, _ = classes(site, tmp_path, config, "--drivers", "sample", "--json")
    assert [c["metadata"]["name"] for c in printed] == ["widget.example.com", "widget-shared.example.com"]


def test_what_gets_no_class_is_named_on_stderr_and_exits_1(site: Path, tmp_path: Path) -> None:
    config = {"drivers": {name: {"frontend": "dra"} for name in ("sample", "odd", "broken", "old")}}
    printed, errors = classes(site, tmp_path, config, "--json", code=1)
    long_name = f"example.com/{'x' * 60}"  # over a string attribute's 64 bytes: selected by its hashed form
    assert sorted(c["spec"]["extendedResourceName"] for c in printed) == sorted(["example.com/card", long_name,
                                                                                  SHARED, WIDGET])
    (long_class,) = [c for c in printed if c["spec"]["extendedResourceName"] == long_name]
    assert "~" in long_class["spec"]["selectors"][0]["cel"]["expression"]
    assert "driver broken: failed: " in errors and "no hardware answers" in errors
    assert "driver old: failed: " in errors and "drivers.old.frontend" in errors
    assert "resource example.com/bad_: not served: it is not an extended resource name" in errors


def test_an_unknown_driver_is_a_usage_error(site: Path) -> None:
    result = run(["dra", "classes", "--drivers", "nope"], env_with(site))
    assert result.returncode == 2 and "unknown driver(s): nope" in result.stderr


@pytest.mark.parametrize(("resource", "name"), [
    ("nvidia.com/gpu", "gpu.nvidia.com"),
    ("nvidia.com/mig-1g.10gb", "mig-1g.10gb.nvidia.com"),
    ("amd.com/xilinx_u250_gen3x16_xdma_shell_3_1-0", None),
    ("rdma/hca_shared_devices_a", None),
    ("example.com/Widget", None),
    ("example.com/a..b", None),
    (f"{'d' * 60}.{'e' * 60}.{'f' * 60}.{'g' * 60}/{'n' * 63}", None),
])
def test_class_names_are_dns_subdomains(resource: str, name: str | None) -> None:
    """``<name>.<prefix>`` where that is a DNS subdomain; else cleaned, with a hash of the resource."""
    assert resource_name_problem(resource) is None
    got = class_name(resource)
    assert DNS1123_SUBDOMAIN.fullmatch(got) and len(got) <= 253, got
    if name is not None:
        assert got == name
    else:
        assert got != f"{resource.partition('/')[2]}.{resource.partition('/')[0]}"
        assert hashlib.sha256(resource.encode()).hexdigest()[:8] in got, f"{got}: a hash of the resource"


def test_resources_that_clean_alike_get_different_class_names() -> None:
    resources = ["example.com/a_b", "example.com/a-b", "example.com/A-b", "example.com/a.b", "example.com/a__b"]
    assert len({class_name(r) for r in resources}) == len(resources)


def test_printed_classes_are_valid_for_kubernetes_1_34_and_later(site: Path, tmp_path: Path) -> None:
    """resource.k8s.io/v1 and DeviceClass.spec.extendedResourceName are both in the schemas from 1.34 on
    (the field alpha in 1.34 and 1.35, beta in 1.36); 1.33's has no resource.k8s.io/v1 at all."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    utils = pytest.importorskip("kubernetes_validate.utils")
    versions = sorted(set(utils.all_versions()), key=lambda v: tuple(int(p) for p in v.split(".")))
    newer = [v for v in versions if tuple(int(p) for p in v.split(".")[:2]) >= (1, 34)]
    assert newer, "kubernetes-validate bundles no schema of 1.34 or later"
    printed, _ = classes(site, tmp_path, SAMPLE_DRA, "--drivers", "sample", "--json")
    for device_class in printed:
        for version in newer:
            kubernetes_validate.validate(device_class, version, strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(printed[0], "1.33.0", strict=True)
    misspelt = {**printed[0], "spec": {**printed[0]["spec"], "extendedResourceNmae": WIDGET}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, newer[0], strict=True)


def test_the_selector_picks_the_resources_devices_and_no_others() -> None:
    """Evaluated by CEL itself (cel-expr-python, when installed) over devices as the scheduler sees them."""
    cel_module = pytest.importorskip("cel_expr_python.cel", reason="cel-expr-python is not installed")
    env = cel_module.NewEnv(variables={"device": cel_module.Type.DYN})
    expression = env.compile(selector(DRA_NAME, WIDGET))

    def picks(driver: str, attributes: dict[str, dict[str, Any]]) -> bool:
        return bool(expression.eval(data={"device": {"driver": driver, "attributes": attributes}}).value())

    assert picks(DRA_NAME, {"multidp.io": {"resource": WIDGET}, "resource.kubernetes.io": {"numaNode": 0}})
    assert not picks(DRA_NAME, {"multidp.io": {"resource": SHARED}})
    assert not picks("gpu.nvidia.com", {"multidp.io": {"resource": WIDGET}})
    assert not picks("gpu.nvidia.com", {}), "another driver's device: the driver check comes first"
