"""Reading the config can never take multidp down: every failure is a ConfigError naming the file or variable.

The hardening review of ``multidp run`` (item 5): a deeply nested YAML file was a RecursionError (a
3,000-line traceback at start, the daemon gone on SIGHUP); ``.inf``/``.nan`` timeouts passed and broke
every call; ``/dev/zero`` was read until memory ran out; a FIFO blocked for ever; duplicate keys passed.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import faults_helpers
import pytest
from faults_helpers import SHARED, WIDGET, wait_full

from multidp.config.sections import driver_section
from multidp.config.settings import load_settings
from multidp.configfiles import MAX_CONFIG_BYTES
from multidp.errors import ConfigError
from multidp.testing import SampleConfig

site, daemons = faults_helpers.site, faults_helpers.daemons  # fixtures

DEEP = "[" * 20_000 + "\n"
CHILD_MEMORY_LIMIT = 1 << 30  # address space for `multidp config check`: the old code read /dev/zero until this


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(path: Path | str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_settings({"config": str(path)}, {})
    return err.value


def test_a_deeply_nested_file_is_a_one_line_config_error_naming_the_file(tmp_path):
    for text in (DEEP, "a:\n" + "".join(" " * i + "- \n" for i in range(1, 400))):
        config = write(tmp_path, text)
        error = config_error(config)
        assert str(config) in str(error) and "nested deeper than" in str(error)
        assert "\n" not in str(error)


def test_yaml_syntax_errors_are_one_line_with_the_line_number(tmp_path):
    config = write(tmp_path, "pluginDir: /x\ndrivers: [unclosed\n")
    error = config_error(config)
    assert "not valid YAML" in str(error) and "line 3" in str(error) and "\n" not in str(error)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN", "1.0e+300"])
def test_timeouts_must_be_finite_and_sane(tmp_path, value):
    error = config_error(write(tmp_path, f"timeouts:\n  allocate: {value}\n"))
    assert error.key.startswith("timeouts") and "allocate" in str(error)


@pytest.mark.parametrize("where", ["drivers:\n  sample:\n    pollInterval: {v}\n",
                                   "drivers:\n  sample:\n    resources:\n      example.com/w: {{count: {v}}}\n"])
def test_non_finite_numbers_are_refused_anywhere_in_the_file(tmp_path, where):
    error = config_error(write(tmp_path, where.format(v=".inf")))
    assert error.key.startswith("drivers.sample.") and "finite" in error.message


def test_duplicate_keys_are_refused_with_the_key_and_both_lines(tmp_path):
    error = config_error(write(tmp_path, "logLevel: info\npluginDir: /x\nlogLevel: debug\n"))
    assert "'logLevel'" in str(error) and "line 1" in str(error) and "line 3" in str(error)
    nested = "drivers:\n  sample:\n    pollInterval: 1\n    pollInterval: 2\n"
    error = config_error(write(tmp_path, nested))
    assert "'pollInterval'" in str(error) and "line 4" in str(error)


def test_merge_keys_may_still_override_what_they_merge(tmp_path):
    text = ("drivers:\n  sample:\n    configByLabel:\n      label: example.com/cfg\n      configs:\n"
            "        a: &a {pollInterval: 2, preStart: true}\n        b: {<<: *a, pollInterval: 3}\n")
    settings = load_settings({"config": str(write(tmp_path, text))}, {})
    configs = settings.driver_sections["sample"]["configByLabel"]["configs"]
    assert configs["b"] == {"pollInterval": 3, "preStart": True}


def test_aliases_that_expand_to_millions_of_values_are_refused(tmp_path):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    text = "drivers:\n  sample:\n" + "".join(f"    {line}\n" for line in levels)
    error = config_error(write(tmp_path, text))  # 9**9 values once expanded
    assert "values" in error.message and "alias" in error.message


def test_a_file_over_the_limit_is_refused_saying_the_limit(tmp_path):
    config = tmp_path / "big.yaml"
    config.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 10))
    error = config_error(config)
    assert str(config) in str(error) and f"{MAX_CONFIG_BYTES // (1 << 20)} MiB" in error.message


def test_a_directory_is_refused(tmp_path):
    assert "not a regular file" in config_error(tmp_path).message


def run_multidp(args: list[str], env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str, int]:
    """``python -m multidp <args>`` with its address space bounded; (exit code, stderr, peak RSS in kB)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_LIMIT, CHILD_MEMORY_LIMIT))

    environ = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_")}
    environ.update(env or {})
    proc = subprocess.Popen([sys.executable, "-m", "multidp", *args], env=environ, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    assert proc.stderr is not None
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + timeout
    while True:  # wait4 rather than wait: the child's own peak RSS
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"multidp {' '.join(args)} still running after {timeout} s")
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout)
    return proc.returncode, "".join(err), usage.ru_maxrss


@pytest.mark.parametrize("path", ["/dev/zero", "fifo"])
def test_config_check_refuses_devices_and_fifos_at_once(tmp_path, path):
    if path == "fifo":
        path = str(tmp_path / "config.fifo")
        os.mkfifo(path)
    code, err, peak_kb = run_multidp(["config", "check", "--config", path])
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "not a regular file" in lines[0] and path in lines[0]
    assert peak_kb < 300_000, f"config check of {path} peaked at {peak_kb} kB"


def test_a_variable_holding_deep_nesting_or_a_non_finite_number_is_a_config_error():
    with pytest.raises(ConfigError, match="MULTIDP_SAMPLE_RESOURCES") as err:
        driver_section("sample", {}, {"MULTIDP_SAMPLE_RESOURCES": DEEP}, SampleConfig)
    assert "nested deeper than" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="MULTIDP_SAMPLE_POLL_INTERVAL.*finite"):
        driver_section("sample", {}, {"MULTIDP_SAMPLE_POLL_INTERVAL": ".nan"}, SampleConfig)
    with pytest.raises(ConfigError, match="MULTIDP_SAMPLE_RESOURCES.*'a'.*twice"):
        driver_section("sample", {}, {"MULTIDP_SAMPLE_RESOURCES": "{a: 1, a: 2}"}, SampleConfig)


# The real daemon ------------------------------------------------------------------------------------------

def test_start_with_a_deeply_nested_config_exits_2_with_one_line(site, tmp_path, socket_dir):
    config = write(tmp_path, DEEP)
    python_path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    code, err, _ = run_multidp(["run", "--plugin-dir", str(socket_dir), "--drivers", "sample", "--config",
                                str(config)], {"PYTHONPATH": python_path})
    lines = err.strip().splitlines()
    assert code == 2, err[-3000:]
    assert len(lines) == 1 and "config error" in lines[0] and str(config) in lines[0], err[-3000:]


def test_sighup_with_a_deeply_nested_config_keeps_serving_and_logs_one_error(kubelet, daemons, tmp_path):
    config = write(tmp_path, "logLevel: info\n")
    daemon = daemons(kubelet.directory, config=config)
    before = wait_full(kubelet)
    registrations = len(kubelet.registrations)
    config.write_text(DEEP)
    daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    line = daemon.wait_log("config reload failed")
    assert str(config) in line and "nested deeper than" in line
    # Still serving: alive, the same lists, streams open, nothing registered again; a second reload works.
    assert daemon.proc is not None and daemon.proc.poll() is None
    for res in (WIDGET, SHARED):
        view = kubelet.wait_devices(res, lambda v: v.allocatable == 4 and v.stream_open, 5, "still served")
        assert sorted(view.devices) == before[res]
    assert len(kubelet.registrations) == registrations
    assert kubelet.allocate(WIDGET, 1).envs
    config.write_text("logLevel: info\n")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log("SIGHUP: reloading the config", count=2)
    assert daemon.stop() == 0
    assert not any("Traceback" in line for line in daemon.lines), daemon.log
    assert [p for p in daemon.problems() if "config reload failed" not in p] == [], daemon.log
    assert sum("config reload failed" in p for p in daemon.problems()) == 1
