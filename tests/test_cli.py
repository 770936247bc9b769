"""The ``multidp`` command as users run it: a real process, real signals, real sockets."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multidp.testing import KubeletStandIn, fake_distribution

WIDGET = "example.com/widget"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """Fake distributions: `sample` (working) and `broken` (fails to import)."""
    site = tmp_path / "site"
    site.mkdir()
    fake_distribution(site, "multidp-sample", {"sample": "multidp.testing.sample_plugin"})
    fake_distribution(site, "multidp-broken", {"broken": "broken_driver_module"})
    (site / "broken_driver_module.py").write_text("raise ImportError('libfoo.so.1 not found')\n")
    return site


def env_with(site: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "multidp", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "multidp", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_registers_and_exits_cleanly_on_signal(kubelet: KubeletStandIn, site, sig):
    proc = start(["run", "--plugin-dir", str(kubelet.directory), "--drivers", "sample",
                  "--cdi-dir", str(kubelet.directory / "cdi")], env_with(site))
    try:
        kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4, timeout=30)
        assert kubelet.allocate(WIDGET, 2).envs["WIDGET_DEVICES"]
    finally:
        code, err = stop(proc, sig)
    assert code == 0, err
    assert "registered with the kubelet" in err
    assert list(kubelet.directory.glob("multidp-*")) == []


def test_sighup_reloads_the_config(kubelet, site, tmp_path):
    config = tmp_path / "multidp.yaml"
    shared = "example.com/widget-shared"
    config.write_text(f"cdiDir: {kubelet.directory / 'cdi'}\ndrivers:\n  sample:\n    resources:\n"
                      f"      {WIDGET}: {{count: 3}}\n      {shared}: {{count: 1, replicas: 3}}\n")
    proc = start(["run", "--plugin-dir", str(kubelet.directory), "--config", str(config)],
                 env_with(site, MULTIDP_DRIVERS="sample"))
    try:
        kubelet.wait_devices(shared, lambda v: v.capacity == 3, timeout=30)
        config.write_text(config.read_text().replace("replicas: 3", "replicas: 6"))
        proc.send_signal(signal.SIGHUP)
        kubelet.wait_devices(shared, lambda v: v.capacity == 6, timeout=30, what="the reloaded inventory")
        assert sum(r.resource == shared for r in kubelet.registrations) == 1
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "SIGHUP: reloading the config" in err


def test_strict_makes_a_load_failure_fatal(kubelet, site):
    result = run(["run", "--plugin-dir", str(kubelet.directory), "--strict"], env_with(site))
    assert result.returncode == 1
    assert "driver broken (multidp-broken 1.0) failed: cannot load: ImportError: libfoo.so.1 not found" \
        in result.stderr
    assert "--strict: driver(s) failed at start: broken" in result.stderr
    assert list(kubelet.directory.glob("multidp-*")) == []


def test_without_strict_a_broken_driver_is_reported_and_the_rest_serve(kubelet, site):
    proc = start(["run", "--plugin-dir", str(kubelet.directory), "--cdi-dir", str(kubelet.directory / "cdi")],
                 env_with(site))
    try:
        kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4, timeout=30)
    finally:
        code, err = stop(proc)
    assert code == 0
    assert "driver broken (multidp-broken 1.0) failed" in err


@pytest.mark.parametrize(("args", "env", "pattern"), [
    # Whatever other drivers are installed beside ours (a vendor's, say), the list names them all, sorted.
    (["--drivers", "sample,gpu"], {}, r"unknown driver\(s\): gpu \(installed: ([\w-]+, )*broken, ([\w-]+, )*sample"),
    ([], {"MULTIDP_STRICT": "perhaps"}, re.escape("config error: MULTIDP_STRICT: 'perhaps' is not a boolean")),
    (["--config", "/no/such/file.yaml"], {}, re.escape("config error: cannot read config file")),
    (["--metrics-address", "nowhere"], {}, re.escape("'nowhere' is not host:port")),
])
def test_usage_and_config_errors_exit_2(site, tmp_path, args, env, pattern):
    result = run(["run", "--plugin-dir", str(tmp_path), *args], env_with(site, **env))
    assert result.returncode == 2
    assert re.search(pattern, result.stderr), result.stderr


def test_bad_flag_value_is_a_usage_error(site):
    result = run(["run", "--strict=perhaps"], env_with(site))
    assert result.returncode == 2
    assert "is not a boolean" in result.stderr


def test_kubelet_socket_outside_plugin_dir_is_warned_about(kubelet, site, tmp_path):
    elsewhere = tmp_path / "elsewhere.sock"
    proc = start(["run", "--plugin-dir", str(kubelet.directory), "--kubelet-socket", str(elsewhere),
                  "--drivers", "sample", "--cdi-dir", str(kubelet.directory / "cdi")], env_with(site))
    time.sleep(1.5)
    code, err = stop(proc)
    assert code == 0
    assert "is outside the plugin dir" in err


def test_devices_json_and_table(site):
    result = run(["devices", "--json", "--simulate"], env_with(site))
    assert result.returncode == 1, result.stderr  # the broken driver failed
    report = {d["driver"]: d for d in json.loads(result.stdout)["drivers"]}
    assert report["broken"]["state"] == "failed"
    widgets = report["sample"]["resources"][WIDGET]
    assert [d["id"] for d in widgets] == ["widget-0", "widget-1", "widget-2", "widget-3"]
    assert widgets[2] == {"id": "widget-2", "health": "Healthy", "numa_nodes": [1], "replicas": None,
                          "reason": "", "info": {"slot": "2"}}
    table = run(["devices", "--drivers", "sample"], env_with(site))
    assert table.returncode == 0, table.stderr  # nothing failed, everything found is served
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["DRIVER", "RESOURCE", "DEVICE", "HEALTH", "NUMA", "REPLICAS", "DETAILS"]
    assert any(line.split()[:5] == ["sample", WIDGET, "widget-3", "Healthy", "1"] for line in lines)


def test_drivers_lists_origin_and_status(site, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("drivers:\n  sample:\n    enabled: false\n")
    result = run(["drivers", "--json", "--config", str(config)], env_with(site))
    assert result.returncode == 0, result.stderr
    report = {d["name"]: d for d in json.loads(result.stdout)["drivers"]}
    assert report["sample"]["status"] == "disabled" and report["sample"]["distribution"] == "multidp-sample"
    assert report["broken"]["status"] == "failed" and "libfoo.so.1" in report["broken"]["reason"]
    table = run(["drivers"], env_with(site))
    assert "multidp-broken 1.0" in table.stdout and "failed" in table.stdout


def test_config_schema_and_check(site, tmp_path):
    schema = json.loads(run(["config", "schema"], env_with(site)).stdout)
    drivers = schema["$defs"]["FileConfig"]["properties"]["drivers"]["properties"]
    assert "sample" in drivers and "broken" not in drivers
    refs = re.findall(r'"\$ref": "#/\$defs/([^"]+)"', json.dumps(schema))
    assert "sample.SampleResource" in refs and all(ref in schema["$defs"] for ref in refs)
    # The driver's own keys and the host's (enabled, configByLabel), and nothing else.
    sample = drivers["sample"]
    assert {"pollInterval", "enabled", "configByLabel"} <= sample["properties"].keys()
    assert sample["additionalProperties"] is False
    jsonschema = pytest.importorskip("jsonschema")
    per_node = {"label": "example.com/cfg", "default": "a", "configs": {"a": {"pollInterval": 2}, "b": None}}
    jsonschema.validate({"drivers": {"sample": {"pollInterval": 1, "configByLabel": per_node}}}, schema)
    with pytest.raises(jsonschema.ValidationError, match="is not valid under any of the given schemas"):
        bad_config = {**per_node, "configs": {"a": {"bogus": 1}}}
        jsonschema.validate({"drivers": {"sample": {"configByLabel": bad_config}}}, schema)
    bad = tmp_path / "bad.yaml"
    bad.write_text("drivers:\n  sample:\n    pollInterval: soon\n")
    result = run(["config", "check", "--config", str(bad), "--drivers", "sample"], env_with(site))
    assert result.returncode == 2
    assert "drivers.sample.pollInterval: Expected `float`, got `str`" in result.stderr
    good = tmp_path / "good.yaml"
    good.write_text("drivers:\n  sample:\n    pollInterval: 2\n")
    ok = run(["config", "check", "--config", str(good), "--drivers", "sample"], env_with(site))
    assert ok.returncode == 0 and "config OK" in ok.stdout


def test_demo_runs_end_to_end(site):
    result = run(["demo", "--sample", "--drivers", "sample"], env_with(site), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for line in ("== Registration", "== Inventory", "== One allocation per resource", "== Health change",
                 "kubelet saw: example.com/widget widget-0 Unhealthy", "registered again",
                 "sockets left behind: none"):
        assert line in out


def test_sigterm_is_taken_whatever_thread_the_kernel_hands_it_to(kubelet, site):
    """A SIGTERM delivered to one of gRPC's threads once left the daemon asleep until SIGKILL."""
    for _ in range(5):
        proc = start(["run", "--plugin-dir", str(kubelet.directory), "--drivers", "sample",
                      "--cdi-dir", str(kubelet.directory / "cdi")], env_with(site))
        count = sum(r.resource == WIDGET for r in kubelet.registrations)
        kubelet.wait_registered(WIDGET, count=count + 1, timeout=30)
        code, err = stop(proc)
        assert code == 0, err
