"""`multidp config check` / `multidp drivers` create the driver with ``context.checking``: the same code
reads every file the config names (at ``context.local_path``), no NVML is touched, and what is wrong
is a ConfigError naming the file and key; what a node would only warn about is a warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from multidp import ConfigError
from multidp.testing import check_config

from multidp_nvidia import machines
from multidp_nvidia.fake_nvml import FakeNvml
from multidp_nvidia.plugin import NvidiaPlugin

POD_FILE = "/etc/nvidia-device-plugin/config.yaml"


def _check(section: dict[str, Any], files: dict[str, Path] | None = None, environ: dict[str, str] | None = None,
           fake: FakeNvml | None = None) -> tuple[Any, list[str]]:
    """What ``multidp config check`` does with ``section``: the plugin, and the warnings it logged."""
    plugin = NvidiaPlugin(fake or FakeNvml(machines.without_nvml()))
    return plugin, check_config(plugin, section, name="nvidia", files=files, environ=environ)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nvidia.yaml"
    path.write_text(text)
    return path


def test_checking_touches_no_nvml_even_with_fail_on_init_error(tmp_path: Path) -> None:
    fake = FakeNvml(machines.without_nvml())
    _check({"failOnInitError": True, "imex": {"channelIDs": [0], "required": True}}, fake=fake)
    assert fake.calls["nvmlInit"] == 0


@pytest.mark.parametrize(("text", "key", "words"), [
    (None, "drivers.nvidia.configFile", "No such file"),
    ("version: v1\nflags: [\n", "drivers.nvidia.configFile", "not valid YAML"),
    ("sharing:\n  timeSlicing:\n    resources:\n    - {name: gpu, replicas: 0}\n",
     "sharing.timeSlicing.resources[0].replicas", "at least 2"),
    ("sharing:\n  timeSlicing: {}\n", "sharing.timeSlicing.resources", "no resources specified"),
    ("flags:\n  migStrategy: bogus\n", "flags.migStrategy", "Invalid enum value"),
    ("resources:\n  gpus:\n  - {pattern: '*', name: Bad_Name.}\n", "resources.gpus[0].name", "resource name"),
    ("flags:\n  deviceDiscoveryStrategy: tegra\n", "flags.deviceDiscoveryStrategy", "tegra"),
])
def test_errors_name_the_pod_file_and_the_key(tmp_path: Path, text: str | None, key: str, words: str) -> None:
    local = tmp_path / "nvidia.yaml"
    if text is not None:
        local.write_text(text)
    with pytest.raises(ConfigError) as caught:
        _check({"configFile": POD_FILE}, files={POD_FILE: local})
    assert caught.value.key == key and words in caught.value.message
    assert caught.value.source == f"{POD_FILE} (read at {local})"


def test_unknown_key_is_a_warning_naming_key_and_file(tmp_path: Path) -> None:
    local = _write(tmp_path, "version: v1\nflags:\n  migStrategy: none\n  fancy: 1\n")
    _, warnings = _check({"configFile": POD_FILE}, files={POD_FILE: local})
    assert any(POD_FILE in w and "flags.fancy" in w for w in warnings)


def test_per_node_configs_are_read_from_their_folder(tmp_path: Path) -> None:
    # configByLabel names /available-configs/<name>; --file /available-configs=<folder> maps them all.
    (tmp_path / "ts").write_text("sharing:\n  timeSlicing:\n    resources:\n    - {name: gpu, replicas: 1}\n")
    with pytest.raises(ConfigError) as caught:
        _check({"configFile": "/available-configs/ts"}, files={"/available-configs": tmp_path})
    assert caught.value.source is not None and "/available-configs/ts" in caught.value.source
    assert caught.value.key == "sharing.timeSlicing.resources[0].replicas"


def test_config_file_variable_is_read_too(tmp_path: Path) -> None:
    local = _write(tmp_path, "version: v2\n")
    with pytest.raises(ConfigError) as caught:
        _check({}, files={POD_FILE: local}, environ={"CONFIG_FILE": POD_FILE})
    assert caught.value.key == "version" and POD_FILE in (caught.value.source or "")


def test_config_check_command_reads_the_file(tmp_path: Path) -> None:
    # End to end through the CLI (the lead's `config check --file POD=LOCAL`): exit 2, file and key named.
    local = _write(tmp_path, "sharing:\n  timeSlicing:\n    resources:\n    - {name: gpu, replicas: 0}\n")
    config = tmp_path / "multidp.yaml"
    config.write_text(f"drivers:\n  nvidia:\n    configFile: {POD_FILE}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_")}
    done = subprocess.run([sys.executable, "-m", "multidp", "config", "check", "--config", str(config),
                           "--drivers", "nvidia", "--file", f"{POD_FILE}={local}"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "sharing.timeSlicing.resources[0].replicas" in done.stdout + done.stderr
    assert POD_FILE in done.stdout + done.stderr
