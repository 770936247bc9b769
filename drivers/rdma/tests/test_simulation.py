"""The plugin as installed: entry point, simulated hardware, faults that travel the normal path."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

from rdma_helpers import health, multidp_command

import multidp_rdma.plugin
from multidp_rdma.faketree import RdmaSimulation


def test_entry_point_names_the_plugin_module() -> None:
    (entry,) = [e for e in entry_points(group="multidp") if e.name == "rdma"]
    assert entry.load() is multidp_rdma.plugin


def test_simulation_fault_is_a_port_going_down_in_sysfs(tmp_path: Path, make_driver) -> None:
    simulation = multidp_rdma.plugin.multidp_simulate(workdir=tmp_path)
    assert isinstance(simulation, RdmaSimulation)
    assert simulation.sysfs_root == tmp_path / "sys" and (tmp_path / "sys" / "class" / "infiniband").is_symlink() \
        is False
    driver = make_driver(simulation.node)
    assert set(health(driver.scan()).values()) == {"Healthy"}
    assert "mlx5_0 port 1" in simulation.inject_fault()
    state = simulation.node.device_dir("mlx5_0") / "ports" / "1" / "state"
    assert state.read_text() == "1: DOWN\n"
    assert health(driver.scan())["0000:3b:00.0"] == "Unhealthy"
    simulation.clear_fault()
    assert set(health(driver.scan()).values()) == {"Healthy"}


def test_devices_command_lists_simulated_devices() -> None:
    result = multidp_command("devices", "--json", MULTIDP_SIMULATE="1", MULTIDP_DRIVERS="rdma")
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)["drivers"]
    assert entry["state"] == "ok"
    devices = entry["resources"]["rdma/hca"]
    assert {d["id"] for d in devices} == {"0000:3b:00.0", "0000:5e:00.0", "0000:86:00.0", "0000:86:00.2",
                                          "0000:86:00.3"}
    assert all(d["health"] == "Healthy" for d in devices)
