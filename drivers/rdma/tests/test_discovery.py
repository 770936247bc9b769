"""Discovery on fake sysfs trees: layouts, PF/VF, odd devices, malformed and unreadable files."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from multidp import AllocationRequest
from rdma_helpers import LOGGER, device, health

from multidp_rdma.discovery import discover
from multidp_rdma.faketree import FakeRdmaNode
from multidp_rdma.sysfs import ProblemLog, SysfsRoot


def _discover(fake: FakeRdmaNode) -> dict[str, object]:
    found = discover(SysfsRoot(fake.sys), ProblemLog(logging.getLogger(LOGGER)))
    return {d.name: d for d in found.devices}


def test_ib_and_roce_hcas_and_vfs_are_enumerated(standard: FakeRdmaNode) -> None:
    found = _discover(standard)
    assert sorted(found) == ["mlx4_0", "mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"]
    ib = found["mlx5_0"]
    assert ib.id == "0000:3b:00.0"  # the PCI address, reached through the auxiliary device
    assert (ib.pci.vendor, ib.pci.device, ib.pci.driver) == ("15b3", "101b", "mlx5_core")
    assert ib.pci.numa_node == 0 and ib.numa_nodes == (0,)
    assert ib.pci.parent == "0000:3a:00.0"
    assert [p.link_layer for p in ib.ports] == ["InfiniBand"] and ib.ports[0].rate == "100 Gb/sec (4X EDR)"
    assert ib.link_types == {"infiniband"} and ib.netdevs == ("ib0",)
    assert ib.uverbs.name == "uverbs0" and ib.uverbs.host_path == "/dev/infiniband/uverbs0"
    assert [(c.name, c.port) for c in ib.umads] == [("umad0", 1)]
    assert [(c.name, c.port) for c in ib.issms] == [("issm0", 1)]
    assert ib.node_guid == "0c42:a103:0065:b2a4" and ib.fw_ver == "16.35.2000"

    roce = found["mlx5_1"]
    assert roce.link_types == {"ether"} and roce.netdevs == ("ens5f0",)
    assert roce.pci.vf_count == 2 and not roce.pci.is_vf and roce.pci.numa_node == 1


def test_vfs_know_their_pf_and_index(standard: FakeRdmaNode) -> None:
    found = _discover(standard)
    for name, address, index in (("mlx5_2", "0000:86:00.2", 0), ("mlx5_3", "0000:86:00.3", 1)):
        vf = found[name].pci
        assert vf.address == address and vf.is_vf
        assert vf.pf_address == "0000:86:00.0" and vf.pf_netdevs == ("ens5f0",) and vf.vf_index == index
        assert vf.device == "1018" and vf.parent == "0000:85:00.0"


def test_multi_port_card_lists_both_ports_and_their_char_devices(standard: FakeRdmaNode) -> None:
    card = _discover(standard)["mlx4_0"]
    assert card.id == "0000:5e:00.0" and card.pci.driver == "mlx4_core"
    assert [p.number for p in card.ports] == [1, 2]
    assert [(c.name, c.port) for c in card.umads] == [("umad1", 1), ("umad2", 2)]


def test_absolute_links_are_read_inside_the_root(node: FakeRdmaNode) -> None:
    node.add_function("0000:3b:00.0")
    path = node.add_rdma("mlx5_0", "0000:3b:00.0")
    link = node.sys / "class" / "infiniband" / "mlx5_0"
    link.unlink()
    link.symlink_to("/sys/" + os.path.relpath(path, node.sys))  # as a copied tree may hold it
    (path / "device").unlink()
    (path / "device").symlink_to("/sys/" + os.path.relpath(node.functions["0000:3b:00.0"], node.sys))
    found = _discover(node)
    assert found["mlx5_0"].id == "0000:3b:00.0" and found["mlx5_0"].path == path


def test_virtual_device_without_pci_function_uses_its_name(node: FakeRdmaNode, make_driver) -> None:
    # rxe/siw devices live under /sys/devices/virtual and have no "device" link.
    path = node.sys / "devices" / "virtual" / "infiniband" / "rxe0"
    node.write(path / "node_type", "1: CA")
    node.write(path / "ports" / "1" / "link_layer", "Ethernet")
    node.set_port("rxe0", 1, 4, 5, path=path)
    node.link(node.sys / "class" / "infiniband" / "rxe0", path)
    entry = node.sys / "devices" / "virtual" / "infiniband_verbs" / "uverbs0"
    node.write(entry / "ibdev", "rxe0")
    node.link(node.sys / "class" / "infiniband_verbs" / "uverbs0", entry)
    node.write(node.node("uverbs0"), "")
    inventory = make_driver(node).scan()
    assert health(inventory) == {"rxe0": "Healthy"}
    assert device(inventory, "rxe0").numa_nodes == ()


def test_two_rdma_devices_on_one_function_get_distinct_ids(node: FakeRdmaNode, make_driver) -> None:
    node.add_function("0000:3b:00.0")
    node.add_rdma("mlx5_0", "0000:3b:00.0")
    node.add_rdma("mlx5_bond_0", "0000:3b:00.0", auxiliary=True)
    inventory = make_driver(node).scan()
    assert sorted(health(inventory)) == ["0000:3b:00.0-mlx5_0", "0000:3b:00.0-mlx5_bond_0"]


def test_unknown_numa_node_means_no_topology(node: FakeRdmaNode) -> None:
    node.add_function("0000:3b:00.0", numa=-1)
    node.add_rdma("mlx5_0", "0000:3b:00.0")
    assert _discover(node)["mlx5_0"].numa_nodes == ()


@pytest.mark.parametrize(
    ("relative", "content", "expected"),
    [
        ("vendor", "mellanox", "not a hexadecimal ID"),
        ("numa_node", "zero", "not a NUMA node number"),
        ("device", None, "is a directory"),  # unreadable: a directory where a file belongs
    ],
)
def test_malformed_pci_file_makes_the_device_unhealthy_with_one_log_line(
    node: FakeRdmaNode, make_driver, caplog: pytest.LogCaptureFixture, relative: str, content: str | None,
    expected: str,
) -> None:
    function = node.add_function("0000:3b:00.0")
    node.add_rdma("mlx5_0", "0000:3b:00.0")
    node.add_function("0000:3c:00.0", bridge="0000:3a:00.0")
    node.add_rdma("mlx5_1", "0000:3c:00.0")
    bad = function / relative
    if content is None:
        bad.unlink()
        bad.mkdir()
    else:
        node.write(bad, content)
    driver = make_driver(node, rescanInterval=1)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        inventory = driver.scan()
        driver.scan()
        driver._events.uevent()  # a second discovery pass (as after a uevent) must not log it again
        driver.scan()
    assert health(inventory) == {"0000:3b:00.0": "Unhealthy", "0000:3c:00.0": "Healthy"}
    assert str(bad) in device(inventory, "0000:3b:00.0").reason
    lines = [r.getMessage() for r in caplog.records if str(bad) in r.getMessage() and expected in r.getMessage()]
    assert len(lines) == 1, lines


def test_dangling_links_leave_the_device_out(node: FakeRdmaNode, make_driver,
                                            caplog: pytest.LogCaptureFixture) -> None:
    node.add_function("0000:3b:00.0")
    node.add_rdma("mlx5_0", "0000:3b:00.0")
    node.add_function("0000:3c:00.0")
    broken = node.add_rdma("mlx5_1", "0000:3c:00.0")
    (broken / "device").unlink()
    (broken / "device").symlink_to("../../../0000:3c:00.7")  # a function that is not there
    os.symlink("../../devices/pci0000:3a/0000:3a:00.0/gone/infiniband/mlx5_9",
               node.sys / "class" / "infiniband" / "mlx5_9")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        inventory = make_driver(node).scan()
    assert health(inventory) == {"0000:3b:00.0": "Healthy"}
    messages = [r.getMessage() for r in caplog.records]
    assert any("mlx5_9 left out" in m and "not a directory" in m for m in messages), messages
    assert any("mlx5_1 left out" in m and "does not exist" in m for m in messages), messages


def test_unreadable_uverbs_entry_is_logged_and_the_device_unusable(node: FakeRdmaNode, make_driver,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    node.add_function("0000:3b:00.0")
    node.add_rdma("mlx5_0", "0000:3b:00.0")
    ibdev = node.rdma["mlx5_0"].home / "infiniband_verbs" / "uverbs0" / "ibdev"
    ibdev.unlink()
    ibdev.mkdir()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        default = make_driver(node).scan()
        configured = make_driver(node, pools=[{"resourceName": "hca"}]).scan()
    assert default == {}  # the default pool takes only devices with a uverbs entry
    assert "no uverbs entry" in device(configured, "0000:3b:00.0").reason
    assert any(str(ibdev) in r.getMessage() for r in caplog.records)


def test_malformed_char_device_port_is_ignored_with_a_log_line(node: FakeRdmaNode,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    node.add_function("0000:3b:00.0")
    node.add_rdma("mlx5_0", "0000:3b:00.0")
    node.write(node.rdma["mlx5_0"].home / "infiniband_mad" / "umad0" / "port", "one")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        found = _discover(node)
    assert [c.name for c in found["mlx5_0"].umads] == [] and found["mlx5_0"].uverbs is not None
    assert any("umad0 ignored" in r.getMessage() for r in caplog.records)


def test_missing_class_directories_mean_no_devices(tmp_path: Path, make_driver) -> None:
    bare = FakeRdmaNode(tmp_path / "bare")
    shutil.rmtree(bare.sys / "class")
    assert make_driver(bare).scan() == {}


def test_renamed_device_keeps_its_id(standard: FakeRdmaNode, make_driver) -> None:
    driver = make_driver(standard)
    before = driver.scan()
    standard.rename_rdma("mlx5_0", "ibp59s0f0")
    after = driver.scan()
    assert health(after) == health(before)
    assert device(after, "0000:3b:00.0").info["rdma"] == "ibp59s0f0"
    allocation = driver.allocate(AllocationRequest("rdma/hca", ("0000:3b:00.0",), ("0000:3b:00.0",)))
    assert "ibp59s0f0" in allocation.envs["PCIDEVICE_RDMA_HCA_INFO"]


def test_every_device_gone_withdraws_the_resource(standard: FakeRdmaNode, make_driver) -> None:
    driver = make_driver(standard)
    assert "rdma/hca" in driver.scan()
    for name in list(standard.rdma):
        standard.remove_rdma(name)
    assert driver.scan() == {}


def test_a_half_made_device_is_looked_at_again_soon_then_less_often(node: FakeRdmaNode, make_driver,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import multidp_rdma.driver as driver_module

    function = node.add_function("0000:3b:00.0")
    node.add_rdma("mlx5_0", "0000:3b:00.0")
    node.write(function / "numa_node", "not a number")  # a problem that does not go away by itself
    clock = [1000.0]
    discoveries: list[float] = []

    def counted(*args: object) -> object:
        discoveries.append(clock[0])
        return discover(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(driver_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(driver_module, "discover", counted)
    driver = make_driver(node, rescanInterval=30)
    for second in range(0, 62):  # one poll a second for a minute and more
        clock[0] = 1000.0 + second
        driver.scan()
    # 1 s after the first look, then 2, 4, 8 and 16 s, then the 30 s rescan interval
    assert [t - 1000.0 for t in discoveries] == [0, 1, 3, 7, 15, 31, 61]
    node.write(function / "numa_node", "0")  # fixed: the next look finds it whole, and the quick looks stop
    clock[0] += 30
    driver.scan()
    assert driver._retry_in is None
