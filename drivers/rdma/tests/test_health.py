"""Health: ports, uverbs nodes, rdma_cm, malformed port files, and recovery — by scanning the driver."""

from __future__ import annotations

import logging
import shutil

import pytest
from rdma_helpers import LOGGER, device, health

from multidp_rdma.faketree import FakeRdmaNode

ALL_HEALTHY = {
    "0000:3b:00.0": "Healthy", "0000:5e:00.0": "Healthy", "0000:86:00.0": "Healthy",
    "0000:86:00.2": "Healthy", "0000:86:00.3": "Healthy",
}


def test_standard_node_is_healthy(standard: FakeRdmaNode, make_driver) -> None:
    assert health(make_driver(standard).scan()) == ALL_HEALTHY


def test_port_down_makes_the_device_unhealthy_and_up_brings_it_back(standard: FakeRdmaNode, make_driver,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    driver = make_driver(standard)
    driver.scan()
    standard.port_down("mlx5_0")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        down = driver.scan()
        driver.scan()
        standard.port_up("mlx5_0")
        up = driver.scan()
    assert health(down)["0000:3b:00.0"] == "Unhealthy"
    assert device(down, "0000:3b:00.0").reason == "no port is ACTIVE and LinkUp: port 1 DOWN/Disabled"
    assert health(up) == ALL_HEALTHY
    messages = [r.getMessage() for r in caplog.records if "mlx5_0" in r.getMessage()]
    assert messages == [
        "RDMA device mlx5_0 (0000:3b:00.0) is Unhealthy: no port is ACTIVE and LinkUp: port 1 DOWN/Disabled",
        "RDMA device mlx5_0 (0000:3b:00.0) is Healthy again",
    ]


def test_multi_port_card_policy_any_or_all(standard: FakeRdmaNode, make_driver) -> None:
    # mlx4_0 has port 1 ACTIVE/LinkUp and port 2 DOWN/Disabled.
    assert health(make_driver(standard).scan())["0000:5e:00.0"] == "Healthy"
    strict = make_driver(standard, portHealth="all").scan()
    assert health(strict)["0000:5e:00.0"] == "Unhealthy"
    assert device(strict, "0000:5e:00.0").reason == "not every port is ACTIVE and LinkUp: port 2 DOWN/Disabled"
    standard.port_down("mlx4_0", 1)
    both_down = make_driver(standard).scan()
    assert device(both_down, "0000:5e:00.0").reason == (
        "no port is ACTIVE and LinkUp: port 1 DOWN/Disabled, port 2 DOWN/Disabled")


@pytest.mark.parametrize(
    ("state", "phys_state", "healthy"),
    [(4, 5, True), (5, 5, True), (4, 2, False), (2, 5, False), (3, 5, False), (1, 3, False)],
)
def test_only_active_or_active_defer_with_linkup_carries_traffic(node: FakeRdmaNode, make_driver, state: int,
                                                                 phys_state: int, healthy: bool) -> None:
    node.add_function("0000:3b:00.0")
    node.add_rdma("mlx5_0", "0000:3b:00.0")
    node.set_port("mlx5_0", 1, state, phys_state)
    assert health(make_driver(node).scan()) == {"0000:3b:00.0": "Healthy" if healthy else "Unhealthy"}


def test_missing_uverbs_node_makes_the_device_unhealthy(standard: FakeRdmaNode, make_driver) -> None:
    driver = make_driver(standard)
    standard.node("uverbs0").unlink()
    gone = driver.scan()
    assert health(gone)["0000:3b:00.0"] == "Unhealthy"
    assert device(gone, "0000:3b:00.0").reason == "/dev/infiniband/uverbs0 is missing"
    assert sum(h == "Healthy" for h in health(gone).values()) == 4
    standard.write(standard.node("uverbs0"), "")
    assert health(driver.scan()) == ALL_HEALTHY


def test_device_without_uverbs_entry_is_left_out_by_default(node: FakeRdmaNode, make_driver) -> None:
    node.add_function("0000:3b:00.0")
    node.add_rdma("mlx5_0", "0000:3b:00.0", uverbs=False)
    node.add_function("0000:3c:00.0")
    node.add_rdma("mlx5_1", "0000:3c:00.0")
    assert health(make_driver(node).scan()) == {"0000:3c:00.0": "Healthy"}
    configured = make_driver(node, pools=[{"resourceName": "all"}]).scan()
    assert health(configured, "rdma/all") == {"0000:3b:00.0": "Unhealthy", "0000:3c:00.0": "Healthy"}
    assert device(configured, "0000:3b:00.0", "rdma/all").reason == "no uverbs entry in sysfs (is ib_uverbs loaded?)"


def test_missing_rdma_cm_makes_every_device_unhealthy_with_one_log_line(
    standard: FakeRdmaNode, make_driver, caplog: pytest.LogCaptureFixture
) -> None:
    driver = make_driver(standard)
    driver.scan()
    standard.remove_rdma_cm()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        scans = [driver.scan() for _ in range(3)]
    assert all(set(health(s).values()) == {"Unhealthy"} for s in scans)
    assert device(scans[0], "0000:86:00.2").reason == "/dev/infiniband/rdma_cm is missing on this node"
    lines = [r for r in caplog.records if "rdma_cm" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    assert "every RDMA device is Unhealthy" in lines[0].getMessage()
    assert len(caplog.records) == 1  # and no line per device
    standard.add_rdma_cm()
    assert health(driver.scan()) == ALL_HEALTHY


def test_host_without_rdma_cm_from_the_start(tmp_path, make_driver) -> None:
    bare = FakeRdmaNode(tmp_path / "n", rdma_cm=False)
    bare.add_function("0000:3b:00.0")
    bare.add_rdma("mlx5_0", "0000:3b:00.0")
    assert health(make_driver(bare).scan()) == {"0000:3b:00.0": "Unhealthy"}


@pytest.mark.parametrize("breakage", ["garbage", "empty", "directory", "missing"])
def test_malformed_or_unreadable_port_state_is_logged_once_and_the_device_unhealthy(
    node: FakeRdmaNode, make_driver, caplog: pytest.LogCaptureFixture, breakage: str
) -> None:
    node.add_function("0000:3b:00.0")
    node.add_rdma("mlx5_0", "0000:3b:00.0")
    state = node.device_dir("mlx5_0") / "ports" / "1" / "state"
    driver = make_driver(node)
    if breakage == "directory":
        state.unlink()
        state.mkdir()
    elif breakage == "missing":
        state.unlink()
    else:
        node.write(state, "ACTIVE" if breakage == "garbage" else "")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        scans = [driver.scan() for _ in range(3)]
    assert all(health(s) == {"0000:3b:00.0": "Unhealthy"} for s in scans)
    assert device(scans[0], "0000:3b:00.0").reason == "no port is ACTIVE and LinkUp: port 1 unreadable"
    file_lines = [r.getMessage() for r in caplog.records if str(state) in r.getMessage()]
    assert len(file_lines) == 1, file_lines
    if state.is_dir():
        shutil.rmtree(state)
    node.port_up("mlx5_0")
    assert health(driver.scan()) == {"0000:3b:00.0": "Healthy"}


def test_device_with_no_ports_is_unhealthy(node: FakeRdmaNode, make_driver) -> None:
    node.add_function("0000:3b:00.0")
    node.add_rdma("mlx5_0", "0000:3b:00.0")
    shutil.rmtree(node.device_dir("mlx5_0") / "ports")
    inventory = make_driver(node).scan()
    assert device(inventory, "0000:3b:00.0").reason == "no ports"
