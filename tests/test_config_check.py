"""``multidp config check`` and ``multidp drivers`` run the driver's own creation, in checking mode.

A plugin written here (``listed``) names a file in its config, as the NVIDIA and RDMA drivers
do: it reads it at ``context.local_path``, raises ConfigError for what is wrong, warns about an
unknown entry, and in checking mode touches nothing else. The commands run as real processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from multidp.testing import fake_distribution

PLUGIN = '''
import msgspec
from multidp import ConfigError, Driver, DriverContext, hookimpl, parse_yaml, read_small_file

MULTIDP_DRIVER_API = "1.1"

class Config(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    list_file: str = "/etc/listed/devices.yaml"
    fail_create: bool = False

class Listed(Driver):
    def scan(self):
        return {}

@hookimpl
def multidp_config_type():
    return Config

@hookimpl
def multidp_create_driver(context: DriverContext):
    if context.config.fail_create:
        raise RuntimeError("cannot open /dev/listed0")
    path = context.local_path(context.config.list_file)
    key = f"drivers.{context.name}.listFile"
    data = parse_yaml(read_small_file(path, key=key), key, str(path))  # each raises a ConfigError naming it
    if not isinstance(data, dict) or not isinstance(data.get("devices"), int) or data["devices"] < 1:
        raise ConfigError("devices", "must be a whole number of at least 1", str(path))
    for key in data.keys() - {"devices"}:
        context.log.warning("%s: unknown key %r, ignored as the incumbent ignores it", path, key)
    if not context.checking:
        open("/dev/listed0")  # a node would touch hardware here; a check never does
    return Listed()
'''


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    fake_distribution(site, "multidp-listed", {"listed": "listed_plugin"})
    (site / "listed_plugin.py").write_text(PLUGIN)
    return site


def multidp(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "multidp", *args, "--drivers", "listed"], env=env,
                          capture_output=True, text=True, timeout=60)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_file_the_config_names_is_read_and_checked(site: Path, tmp_path: Path) -> None:
    good = write(tmp_path / "good.yaml", "devices: 2\n")
    config = write(tmp_path / "c.yaml", f"drivers:\n  listed:\n    listFile: {good}\n")
    ok = multidp(site, "config", "check", "--config", str(config))
    assert ok.returncode == 0 and ok.stdout.startswith("config OK"), ok.stderr

    bad = write(tmp_path / "bad.yaml", "devices: 0\n")
    config.write_text(f"drivers:\n  listed:\n    listFile: {bad}\n")
    result = multidp(site, "config", "check", "--config", str(config))
    assert result.returncode == 2
    assert f"driver listed: bad config: devices: must be a whole number of at least 1 (in {bad})" in result.stderr

    config.write_text(f"drivers:\n  listed:\n    listFile: {tmp_path / 'absent.yaml'}\n")
    result = multidp(site, "config", "check", "--config", str(config))
    assert result.returncode == 2
    assert (f"drivers.listed.listFile: cannot read config file: No such file or directory "
            f"(in {tmp_path / 'absent.yaml'})") in result.stderr


def test_pod_only_paths_are_read_from_the_files_given(site: Path, tmp_path: Path) -> None:
    (tmp_path / "cm").mkdir()
    write(tmp_path / "cm" / "devices.yaml", "devices: 4\n")
    config = write(tmp_path / "c.yaml", "drivers:\n  listed: {}\n")  # the default, /etc/listed/devices.yaml
    missing = multidp(site, "config", "check", "--config", str(config))
    assert missing.returncode == 2 and "/etc/listed/devices.yaml" in missing.stderr
    for mapping in (f"/etc/listed={tmp_path / 'cm'}", f"/etc/listed/devices.yaml={tmp_path / 'cm' / 'devices.yaml'}"):
        mapped = multidp(site, "config", "check", "--config", str(config), "--file", mapping)
        assert mapped.returncode == 0, mapped.stderr
    wrong = multidp(site, "config", "check", "--config", str(config), "--file", "etc/listed=nowhere")
    assert wrong.returncode == 2 and "--file 'etc/listed=nowhere': write POD_PATH=LOCAL_PATH" in wrong.stderr


def test_each_per_node_config_is_checked_and_named(site: Path, tmp_path: Path) -> None:
    good = write(tmp_path / "good.yaml", "devices: 2\n")
    bad = write(tmp_path / "bad.yaml", "devices: many\n")
    config = write(tmp_path / "c.yaml", f"""drivers:
  listed:
    listFile: {good}
    configByLabel:
      label: example.com/listed
      configs:
        small: {{listFile: {good}}}
        broken: {{listFile: {bad}}}
""")
    result = multidp(site, "config", "check", "--config", str(config))
    assert result.returncode == 2
    assert f"devices: must be a whole number of at least 1 (in {bad}) (with the per-node config 'broken')" \
        in result.stderr
    report = json.loads(multidp(site, "drivers", "--json", "--config", str(config)).stdout)["drivers"]
    listed = next(entry for entry in report if entry["name"] == "listed")
    assert listed["status"] == "failed" and "'broken'" in listed["reason"]


def test_warnings_are_reported_and_can_fail_the_check(site: Path, tmp_path: Path) -> None:
    odd = write(tmp_path / "odd.yaml", "devices: 2\ncolour: blue\n")
    config = write(tmp_path / "c.yaml", f"drivers:\n  listed:\n    listFile: {odd}\n")
    result = multidp(site, "config", "check", "--config", str(config))
    assert result.returncode == 1 and "with 1 warning(s)" in result.stdout
    assert result.stderr.count("unknown key 'colour'") == 1  # printed once, not also by the logger
    assert "driver listed: warning:" in result.stderr
    table = multidp(site, "drivers", "--config", str(config))
    assert "warning:" in table.stdout and "unknown key 'colour'" in table.stdout


def test_a_driver_that_fails_to_create_fails_the_check(site: Path, tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "drivers:\n  listed:\n    failCreate: true\n")
    result = multidp(site, "config", "check", "--config", str(config))
    assert result.returncode == 2 and "cannot open /dev/listed0" in result.stderr
    # Disabled in the config, but a node label can still run it: checked all the same.
    for disabled in ("drivers:\n  listed:\n    enabled: false\n    failCreate: true\n",
                     "drivers:\n  default: {enabled: false}\n  listed:\n    failCreate: true\n"):
        result = multidp(site, "config", "check", "--config", str(write(tmp_path / "d.yaml", disabled)))
        assert result.returncode == 2
        assert "cannot open /dev/listed0; disabled in config, but multidp.io/listed=true would run it" in result.stderr
    devices = write(tmp_path / "devices.yaml", "devices: 1\n")
    good = write(tmp_path / "g.yaml", f"drivers:\n  default: {{enabled: false}}\n  listed: {{listFile: {devices}}}\n")
    report = json.loads(multidp(site, "drivers", "--json", "--config", str(good)).stdout)["drivers"]
    listed = next(entry for entry in report if entry["name"] == "listed")
    assert listed["status"] == "disabled" and "its config was checked" in listed["reason"]


def test_a_driver_written_for_api_1_0_is_not_created_to_check(site: Path, tmp_path: Path) -> None:
    (site / "listed_plugin.py").write_text(PLUGIN.replace('MULTIDP_DRIVER_API = "1.1"', ""))
    config = write(tmp_path / "c.yaml", "drivers:\n  listed:\n    failCreate: true\n")  # would fail if created
    result = multidp(site, "drivers", "--json", "--config", str(config))
    listed = next(entry for entry in json.loads(result.stdout)["drivers"] if entry["name"] == "listed")
    assert listed["status"] == "ok" and "declares driver API 1.0, before checking mode came in 1.1" in listed["reason"]


def test_check_config_in_the_testing_kit_runs_the_same_check(tmp_path: Path) -> None:
    import types

    from multidp import ConfigError
    from multidp.testing import check_config

    plugin = types.ModuleType("listed_plugin")
    exec(compile(PLUGIN, "listed_plugin.py", "exec"), plugin.__dict__)  # the plugin above, not installed
    local = write(tmp_path / "devices.yaml", "devices: 3\nshape: round\n")
    warnings = check_config(plugin, {}, name="listed", files={"/etc/listed/devices.yaml": local})
    assert warnings == [f"{local}: unknown key 'shape', ignored as the incumbent ignores it"]
    with pytest.raises(ConfigError, match="No such file"):
        check_config(plugin, {"listFile": str(tmp_path / "absent.yaml")}, name="listed")
