"""sysfs files vanishing mid-scan, under the real rdma and fpga drivers (docs/security.md).

A thread deletes device directories, attribute files, class links and device
nodes of some devices and puts them back, in a loop, while the host polls every
50 ms. The devices left alone must stay Healthy and allocatable throughout; no
scan may fail (a failed scan marks every device of the driver Unhealthy); every
problem is logged naming its file or device, without a traceback; and once the
files are back the kubelet has the full list again.
"""

from __future__ import annotations

import logging
import random
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from multidp.api import pb
from multidp.serving.sockets import socket_name
from multidp.testing import wait_until

BOUND_S = 30.0
CHURN_S = 3.0
FAST = {"pollInterval": 0.05}

rdma_plugin = pytest.importorskip("multidp_rdma.plugin", reason="multidp-rdma is not installed")
fpga_plugin = pytest.importorskip("multidp_fpga.plugin", reason="multidp-fpga is not installed")
from multidp_fpga.fakesys import FakeNode  # noqa: E402
from multidp_rdma.faketree import standard_node  # noqa: E402

Action = tuple[str, Callable[[], None], Callable[[], None]]  # (what, break it, put it back)


def churn(actions: list[Action], stop: threading.Event, seed: int, done: list[str]) -> None:
    """Break and repair at random until ``stop``; every action ends repaired.

    Half the outages are flaps of a few microseconds (caught mid-scan, if at all), half
    last up to 80 ms (seen by one or two scans, so the kubelet sees them too).
    """
    rng = random.Random(seed)
    while not stop.is_set():
        what, breaks, repairs = rng.choice(actions)
        breaks()
        time.sleep(rng.choice((0.0, rng.uniform(0, 0.08))))
        repairs()
        done.append(what)
        time.sleep(rng.choice((0.0, rng.uniform(0, 0.02))))


def run_churn(actions: list[Action], during: Callable[[], None], seed: int = 6) -> list[str]:
    """Churn for CHURN_S seconds while calling ``during()`` over and over; the actions done."""
    stop, done = threading.Event(), []
    thread = threading.Thread(target=churn, args=(actions, stop, seed, done), name="churn", daemon=True)
    thread.start()
    deadline = time.monotonic() + CHURN_S
    try:
        while time.monotonic() < deadline:
            during()
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(BOUND_S)
    assert not thread.is_alive()
    return done


def allocate(stub, device_id: str) -> pb.ContainerAllocateResponse:
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[device_id])])
    return stub.Allocate(request, timeout=BOUND_S).container_responses[0]


def check_log(records: list[logging.LogRecord], root: Path) -> None:
    """Problems are logged by the driver naming a file under the tree (or a device), never with a traceback."""
    assert [r.getMessage() for r in records if r.exc_info] == []
    assert [r.getMessage() for r in records if r.name == "multidp.plugins.runner" and r.levelno >= logging.ERROR] == []
    driver_lines = [r.getMessage() for r in records if r.name.startswith("multidp.driver.") and r.levelno >= 30]
    assert driver_lines, "the vanished files were not logged"
    unclear = [line for line in driver_lines if str(root) not in line and "device" not in line]
    assert unclear == []


# RDMA --------------------------------------------------------------------------------------------------------

def test_rdma_files_vanishing_mid_scan(kubelet, multidp_host, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    node = standard_node(tmp_path / "node")
    host = multidp_host({"rdma": rdma_plugin}, drivers={"rdma": {**FAST, "udev": "off", "verbs": "off"}},
                        sysfs_root=node.sys, dev_root=node.dev)
    full = kubelet.wait_devices("rdma/hca", lambda v: v.allocatable == 5, BOUND_S, "five HCAs")
    ids = sorted(full.devices)
    vf3 = node.device_dir("mlx5_3")
    pf_uverbs = node.node(next(c for c in node.char_names("mlx5_1") if c.startswith("uverbs")))
    mlx4_class = node.sys / "class" / "infiniband" / "mlx4_0"
    mlx4_target = mlx4_class.readlink()

    def unplug_vf2() -> None:
        node.remove_rdma("mlx5_2")

    def replug_vf2() -> None:
        node.add_rdma("mlx5_2", "0000:86:00.2", link_layer="Ethernet", netdev="ens5f0v0", auxiliary=True,
                      guid=0x0C42A1030065C020)

    actions: list[Action] = [
        ("mlx5_2 unplugged: its device dir, class links and nodes gone", unplug_vf2, replug_vf2),
        ("mlx5_3 port state files gone", lambda: [(vf3 / "ports/1" / f).unlink() for f in ("state", "phys_state")],
         lambda: node.port_up("mlx5_3")),
        # Not the ports directory itself: a discovery that runs while it is gone is kept, wrongly
        # (test_rdma_ports_gone_during_a_discovery_come_back below).
        ("mlx5_1 uverbs node gone", lambda: pf_uverbs.unlink(), lambda: node.write(pf_uverbs, "")),
        ("mlx4_0 class link gone", lambda: mlx4_class.unlink(), lambda: mlx4_class.symlink_to(mlx4_target)),
    ]
    stub = kubelet.stub("rdma/hca")
    untouched = "0000:3b:00.0"  # mlx5_0: none of its files is touched
    seen_unhealthy: list[str] = []
    seen_damage: set[str] = set()

    def during() -> None:
        devices = dict(kubelet.resources["rdma/hca"].devices)
        if devices.get(untouched, ("Healthy",))[0] != "Healthy":
            seen_unhealthy.append(untouched)
        seen_damage.update(i for i in ids if devices.get(i, ("gone",))[0] != "Healthy")
        assert allocate(stub, untouched).envs["PCIDEVICE_RDMA_HCA"] == untouched

    done = run_churn(actions, during)
    assert len(set(done)) == len(actions)  # every kind of damage happened at least once
    assert seen_unhealthy == []
    assert seen_damage, "the kubelet never saw the damage: the churn did not reach the scans"
    assert host.runners["rdma"].scan_failures == 0
    view = kubelet.wait_devices("rdma/hca", lambda v: v.allocatable == 5 and sorted(v.devices) == ids, BOUND_S,
                                "the full list, every HCA Healthy again")
    assert view.stream_open
    for device_id in ids:
        assert allocate(stub, device_id).envs["PCIDEVICE_RDMA_HCA"] == device_id
    check_log(caplog.records, node.root)
    assert kubelet.errors == []


# FPGA --------------------------------------------------------------------------------------------------------

IFACE = "ce48969398f05f33946d560708be108a"
AFU = "d8424dc4a4a3c413f89e433683f9040b"
AF = "fpga.intel.com/af-ce4.d84.zkiWk5jwXzOUbVYHCL4QithCTcSko8QT-J5DNoP5BAs"
U200 = ("xilinx_u200_xdma_201830_2", "1561465320")
U200_RES = "amd.com/xilinx_u200_xdma_201830_2-1561465320"
U250 = ("xilinx_u250_gen3x16_xdma_shell_4_1", "1617814830")
U250_RES = "amd.com/xilinx_u250_gen3x16_xdma_shell_4_1-1617814830"


def test_fpga_files_vanishing_mid_scan(kubelet, multidp_host, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    node = FakeNode(tmp_path / "node")
    node.dfl_card("0000:5e:00.0", IFACE, [AFU], numa=0)  # left alone
    churned = node.dfl_card("0000:af:00.0", IFACE, [AFU, AFU], numa=1)
    node.alveo_card("0000:65:00", *U200, numa=0)  # unplugged and plugged again: its resource comes and goes
    u250 = node.alveo_card("0000:d8:00", *U250, numa=1)
    host = multidp_host({"fpga": fpga_plugin}, drivers={"fpga": FAST}, sysfs_root=node.sys, dev_root=node.dev)
    kubelet.wait_devices(AF, lambda v: v.allocatable == 3, BOUND_S, "three Intel ports")
    kubelet.wait_devices(U200_RES, lambda v: v.allocatable == 1, BOUND_S, "the U200")
    kubelet.wait_devices(U250_RES, lambda v: v.allocatable == 1, BOUND_S, "the U250")
    first_port = churned.ports[0]
    afu_file = churned.afu_files[first_port]
    port_node = node.dev / churned.ports[1]
    vbnv = u250.rom / "VBNV"
    render = next(n for n in u250.nodes if "renderD" in n.name)

    def hide(path: Path) -> Callable[[], None]:
        return lambda: path.rename(path.with_name(path.name + ".away"))

    def show(path: Path) -> Callable[[], None]:
        return lambda: path.with_name(path.name + ".away").rename(path)

    actions: list[Action] = [
        ("U200 unplugged", lambda: node.remove_card("0000:65:00.1"), lambda: node.alveo_card("0000:65:00", *U200)),
        (f"{first_port} afu_id gone", hide(afu_file), show(afu_file)),
        (f"{first_port} port dir gone", hide(afu_file.parent), show(afu_file.parent)),
        (f"{port_node.name} node gone", hide(port_node), show(port_node)),
        ("FME region dir gone", hide(churned.interface_file.parent), show(churned.interface_file.parent)),
        ("U250 VBNV gone", hide(vbnv), show(vbnv)),
        ("U250 rom dir gone", hide(u250.rom), show(u250.rom)),
        ("U250 render node gone", hide(render), show(render)),
    ]
    stub = kubelet.stub(AF)
    untouched = "dfl-port.0"
    seen_unhealthy: list[str] = []
    seen_damage: set[str] = set()

    def during() -> None:
        devices = dict(kubelet.resources[AF].devices)
        if devices.get(untouched, ("Healthy",))[0] != "Healthy":
            seen_unhealthy.append(untouched)
        seen_damage.update(i for i in churned.ports if devices.get(i, ("gone",))[0] != "Healthy")
        seen_damage.update(r for r in (U200_RES, U250_RES) if kubelet.resources[r].allocatable != 1)
        assert allocate(stub, untouched).devices[0].host_path == f"/dev/{untouched}"

    done = run_churn(actions, during)
    assert len(set(done)) == len(actions)
    assert seen_unhealthy == []
    assert seen_damage, "the kubelet never saw the damage: the churn did not reach the scans"
    assert host.runners["fpga"].scan_failures == 0
    view = kubelet.wait_devices(AF, lambda v: v.allocatable == 3, BOUND_S, "every Intel port Healthy again")
    assert sorted(view.devices) == ["dfl-port.0", *churned.ports]
    for resource in (U200_RES, U250_RES):
        view = kubelet.wait_devices(resource, lambda v: v.allocatable == 1 and v.stream_open, BOUND_S,
                                    f"{resource} served again")
        socket = kubelet.directory / socket_name("fpga", resource)
        wait_until(socket.is_socket, BOUND_S, f"{socket} served")
        (device_id,) = view.devices
        try:
            assert allocate(kubelet.stub(resource), device_id).devices
        except grpc.RpcError as exc:
            pytest.fail(f"{resource}: {exc.code().name} {exc.details()}")
    check_log(caplog.records, node.root)
    assert kubelet.errors == []


def test_rdma_ports_gone_during_a_discovery_come_back(kubelet, multidp_host, tmp_path):
    node = standard_node(tmp_path / "node")
    multidp_host({"rdma": rdma_plugin}, drivers={"rdma": {**FAST, "udev": "off", "verbs": "off",
                                                          "rescanInterval": 3600}},
                 sysfs_root=node.sys, dev_root=node.dev)
    kubelet.wait_devices("rdma/hca", lambda v: v.allocatable == 5, BOUND_S, "five HCAs")
    ports = node.device_dir("mlx5_3") / "ports"
    shutil.move(ports, tmp_path / "ports")  # mlx5_3's ports are gone (a device being re-created) ...
    node.remove_rdma("mlx5_2")  # ... when the class directories change: a discovery runs
    kubelet.wait_devices("rdma/hca", lambda v: "0000:86:00.2" not in v.devices
                         and v.devices["0000:86:00.3"][0] == "Unhealthy", BOUND_S, "mlx5_2 gone, mlx5_3 without ports")
    shutil.move(tmp_path / "ports", ports)  # the ports are back
    # 100 polls: the ports are read on every poll, so the next one should see them.
    kubelet.wait_devices("rdma/hca", lambda v: v.devices["0000:86:00.3"][0] == "Healthy", 5.0, "mlx5_3 Healthy")
