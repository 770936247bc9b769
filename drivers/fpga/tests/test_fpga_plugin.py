"""The installed plugin: entry point, simulation, and the multidp commands that use it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from multidp import DriverContext, Health
from multidp.testing import PluginRegistry

from fpga_helpers import AF_IFACE_AFU, U200_RES, by_id
from multidp_fpga import plugin
from multidp_fpga.config import FpgaConfig
from multidp_fpga.simulate import FpgaSimulation

# The console script's own code path, from this interpreter (whatever its bin folder holds).
MULTIDP = [sys.executable, "-m", "multidp"]


def test_entry_point_is_installed_and_loads():
    registry = PluginRegistry()
    assert "fpga" in registry.names
    info = registry.load(["fpga"])[0]
    assert info.loaded, info.error
    assert info.distribution == "multidp-fpga"
    assert registry.call("fpga", "multidp_config_type") is FpgaConfig


def test_simulation_fault_travels_through_sysfs(tmp_path):
    simulation = plugin.multidp_simulate(workdir=tmp_path)
    context = DriverContext(name="fpga", config=FpgaConfig(), sysfs_root=simulation.sysfs_root,
                            dev_root=simulation.dev_root, simulation=simulation, log=logging.getLogger("t"))
    driver = plugin.multidp_create_driver(context=context)
    inventory = driver.scan()
    assert {AF_IFACE_AFU, U200_RES} <= set(inventory)
    assert "afu_id" in simulation.inject_fault()
    resource, device = by_id(driver.scan())[FpgaSimulation.FAULTY_PORT]
    assert resource == AF_IFACE_AFU and device.health is Health.UNHEALTHY
    assert "restored" in simulation.clear_fault()
    assert by_id(driver.scan())[FpgaSimulation.FAULTY_PORT][1].health is Health.HEALTHY
    assert simulation.clear_fault() == "nothing to repair"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "GRPC_VERBOSITY": "ERROR", "MULTIDP_DRIVERS": "fpga", **env}
    return subprocess.run([*MULTIDP, *args], capture_output=True, text=True, timeout=60, env=environ, check=False)


def test_devices_command_lists_simulated_fpgas():
    result = run("devices", MULTIDP_SIMULATE="1")
    assert result.returncode == 0, result.stderr
    assert AF_IFACE_AFU in result.stdout and "dfl-port.0" in result.stdout
    assert U200_RES in result.stdout and "0000:65:00.1" in result.stdout


def test_demo_shows_the_fault_and_the_recovery():
    result = run("demo", "--drivers", "fpga")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dfl-port.0 Unhealthy" in result.stdout
    assert "dfl-port.0 Healthy" in result.stdout
    assert "sockets left behind: none" in result.stdout
