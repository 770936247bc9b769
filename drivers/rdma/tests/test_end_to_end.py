"""The driver in a real host, over real unix sockets, against the kubelet stand-in."""

from __future__ import annotations

import json
from typing import Any

import multidp_rdma.plugin
from multidp_rdma.faketree import FakeRdmaNode

WAIT_S = 10.0  # generous: a port change is polled every 0.25 s
PCI = ["0000:5e:00.0", "0000:3b:00.0", "0000:86:00.0", "0000:86:00.2", "0000:86:00.3"]


def _start(multidp_host, fake: FakeRdmaNode, config: dict[str, Any] | None = None) -> None:
    multidp_host({"rdma": multidp_rdma.plugin}, drivers={"rdma": config or {}},
                 sysfs_root=fake.sys, dev_root=fake.dev)


def _health(kubelet, resource: str = "rdma/hca") -> dict[str, str]:
    return {i: h for i, (h, _) in kubelet.resources[resource].devices.items()}


def test_registers_and_allocates_through_the_kubelet(standard: FakeRdmaNode, kubelet, multidp_host) -> None:
    _start(multidp_host, standard)
    registration = kubelet.wait_registered("rdma/hca")
    assert registration.options.get_preferred_allocation_available
    view = kubelet.wait_devices("rdma/hca", lambda v: v.allocatable == 5, WAIT_S, "five healthy HCAs")
    assert sorted(view.devices) == sorted(PCI)
    assert view.devices["0000:86:00.2"] == ("Healthy", (1,))

    # Two devices: the preferred allocation keeps them on one NUMA node (0: mlx4_0 and mlx5_0).
    response = kubelet.allocate("rdma/hca", 2)
    picked = response.envs["PCIDEVICE_RDMA_HCA"].split(",")
    assert sorted(picked) == ["0000:3b:00.0", "0000:5e:00.0"]
    info = json.loads(response.envs["PCIDEVICE_RDMA_HCA_INFO"])
    assert info["0000:3b:00.0"]["rdma"] == {"uverbs": "/dev/infiniband/uverbs0", "umad": "/dev/infiniband/umad0",
                                            "rdma_cm": "/dev/infiniband/rdma_cm", "rdma_dev": "mlx5_0"}
    nodes = {(d.host_path, d.container_path, d.permissions) for d in response.devices}
    assert ("/dev/infiniband/rdma_cm", "/dev/infiniband/rdma_cm", "rw") in nodes
    assert {d.host_path for d in response.devices} == {
        "/dev/infiniband/uverbs0", "/dev/infiniband/umad0", "/dev/infiniband/uverbs1", "/dev/infiniband/umad1",
        "/dev/infiniband/umad2", "/dev/infiniband/rdma_cm"}

    # Three more: the RoCE PF and its VFs on NUMA node 1.
    response = kubelet.allocate("rdma/hca", 3)
    assert sorted(response.envs["PCIDEVICE_RDMA_HCA"].split(",")) == PCI[2:]


def test_port_down_and_up_reach_the_kubelet(standard: FakeRdmaNode, kubelet, multidp_host) -> None:
    _start(multidp_host, standard)
    kubelet.wait_devices("rdma/hca", lambda v: v.allocatable == 5, WAIT_S, "five healthy HCAs")
    standard.port_down("mlx5_1")
    kubelet.wait_devices("rdma/hca", lambda v: v.devices["0000:86:00.0"][0] == "Unhealthy", WAIT_S, "PF down")
    assert list(_health(kubelet).values()).count("Unhealthy") == 1
    standard.port_up("mlx5_1")
    kubelet.wait_devices("rdma/hca", lambda v: v.allocatable == 5, WAIT_S, "PF back")


def test_rdma_cm_vanishing_and_returning(standard: FakeRdmaNode, kubelet, multidp_host) -> None:
    _start(multidp_host, standard)
    kubelet.wait_devices("rdma/hca", lambda v: v.allocatable == 5, WAIT_S, "five healthy HCAs")
    standard.remove_rdma_cm()
    kubelet.wait_devices("rdma/hca", lambda v: v.capacity == 5 and v.allocatable == 0, WAIT_S, "all Unhealthy")
    standard.add_rdma_cm()
    kubelet.wait_devices("rdma/hca", lambda v: v.allocatable == 5, WAIT_S, "all Healthy again")


def test_hot_plug_without_restart(standard: FakeRdmaNode, kubelet, multidp_host) -> None:
    _start(multidp_host, standard)
    kubelet.wait_devices("rdma/hca", lambda v: v.allocatable == 5, WAIT_S, "five healthy HCAs")
    registrations = len(kubelet.registrations)
    # A third VF is created (sriov_numvfs raised): its function and RDMA device appear.
    standard.add_function("0000:86:00.4", device="0x1018", numa=1, bridge="0000:85:00.0", netdevs=["ens5f0v2"],
                          pf="0000:86:00.0")
    standard.add_rdma("mlx5_4", "0000:86:00.4", link_layer="Ethernet", netdev="ens5f0v2", auxiliary=True)
    kubelet.wait_devices("rdma/hca", lambda v: v.devices.get("0000:86:00.4", ("",))[0] == "Healthy", WAIT_S,
                         "the new VF")
    # A VF goes away (driver unbind / hot-unplug).
    standard.remove_rdma("mlx5_2")
    view = kubelet.wait_devices("rdma/hca", lambda v: "0000:86:00.2" not in v.devices, WAIT_S, "the VF gone")
    assert sorted(view.devices) == sorted([*PCI[:3], "0000:86:00.3", "0000:86:00.4"])
    assert len(kubelet.registrations) == registrations  # the same endpoint, no restart
    response = kubelet.allocate("rdma/hca", 1)
    assert response.envs["PCIDEVICE_RDMA_HCA"] in kubelet.resources["rdma/hca"].devices


def test_shared_pool_through_the_kubelet(standard: FakeRdmaNode, kubelet, multidp_host) -> None:
    _start(multidp_host, standard, {"pools": [
        {"resourceName": "hca_shared_devices_a", "mode": "shared", "rdmaHcaMax": 3,
         "selectors": {"vendors": ["15b3"], "linkTypes": ["infiniband"]}},
        {"resourceName": "sriov_vfs", "resourcePrefix": "example.com", "selectors": {"pfNames": ["ens5f0#0-7"]}},
    ]})
    view = kubelet.wait_devices("rdma/hca_shared_devices_a", lambda v: v.allocatable == 3, WAIT_S, "replicas")
    assert sorted(view.devices) == [f"hca_shared_devices_a::{i}" for i in range(3)]
    kubelet.wait_devices("example.com/sriov_vfs", lambda v: v.allocatable == 2, WAIT_S, "two VFs")
    first = kubelet.allocate("rdma/hca_shared_devices_a", 1)
    second = kubelet.allocate("rdma/hca_shared_devices_a", 1)
    for response in (first, second):
        assert response.envs["PCIDEVICE_RDMA_HCA_SHARED_DEVICES_A"] == "0000:5e:00.0,0000:3b:00.0"
    standard.port_down("mlx5_0")
    standard.port_down("mlx4_0")
    kubelet.wait_devices("rdma/hca_shared_devices_a", lambda v: v.allocatable == 0, WAIT_S, "replicas Unhealthy")
    vf = kubelet.allocate("example.com/sriov_vfs", 1)
    assert vf.envs["PCIDEVICE_EXAMPLE_COM_SRIOV_VFS"] in ("0000:86:00.2", "0000:86:00.3")


def test_settings_from_multidp_rdma_variables(standard: FakeRdmaNode, kubelet, multidp_host) -> None:
    multidp_host({"rdma": multidp_rdma.plugin}, drivers={"rdma": {}}, sysfs_root=standard.sys,
                 dev_root=standard.dev, environ={"MULTIDP_RDMA_PORT_HEALTH": "all"})
    view = kubelet.wait_devices("rdma/hca", lambda v: v.capacity == 5, WAIT_S, "five HCAs")
    assert view.devices["0000:5e:00.0"][0] == "Unhealthy"  # mlx4_0's port 2 is down
    assert view.allocatable == 4


def test_mellanox_config_file_as_it_is(standard: FakeRdmaNode, kubelet, multidp_host, tmp_path) -> None:
    config = tmp_path / "config.json"  # as Mellanox documents it
    config.write_text('{\n  "periodicUpdateInterval": 300,\n  "configList": [{\n'
                      '    "resourceName": "hca_shared_devices_a",\n    "rdmaHcaMax": 1000,\n'
                      '    "selectors": {"vendors": ["15b3"], "linkTypes": ["infiniband"]}\n  }]\n}\n')
    _start(multidp_host, standard, {"configFile": str(config)})
    view = kubelet.wait_devices("rdma/hca_shared_devices_a", lambda v: v.allocatable == 1000, WAIT_S, "replicas")
    # Mellanox's own IDs (strconv.Itoa(n), n < rdmaHcaMax: pkg/resources/server.go newResourceServer).
    assert sorted(view.devices, key=int) == [str(n) for n in range(1000)]
    response = kubelet.allocate("rdma/hca_shared_devices_a", 1)
    assert response.envs["PCIDEVICE_RDMA_HCA_SHARED_DEVICES_A"] == "0000:5e:00.0,0000:3b:00.0"
    assert {d.host_path for d in response.devices} == {
        "/dev/infiniband/uverbs0", "/dev/infiniband/umad0", "/dev/infiniband/uverbs1", "/dev/infiniband/umad1",
        "/dev/infiniband/umad2", "/dev/infiniband/rdma_cm"}


def test_sriov_config_file_as_it_is(standard: FakeRdmaNode, kubelet, multidp_host, tmp_path) -> None:
    config = tmp_path / "config.json"  # as the SR-IOV plugin documents it, with a plain netdevice pool
    config.write_text('{\n    "resourceList": [{\n            "resourceName": "intel_sriov_netdevice",\n'
                      '            "selectors": {"vendors": ["8086"], "devices": ["154c"], "drivers": ["iavf"]}\n'
                      '        },\n        {\n            "resourceName": "mlnx_sriov_rdma",\n'
                      '            "resourcePrefix": "mellanox.com",\n'
                      '            "selectors": {"vendors": ["15b3"], "devices": ["1018"], "isRdma": true}\n'
                      '        }\n    ]\n}\n')
    _start(multidp_host, standard, {"configFile": str(config)})
    view = kubelet.wait_devices("mellanox.com/mlnx_sriov_rdma", lambda v: v.allocatable == 2, WAIT_S, "two VFs")
    assert sorted(view.devices) == ["0000:86:00.2", "0000:86:00.3"]
    response = kubelet.allocate("mellanox.com/mlnx_sriov_rdma", 1)
    vf = response.envs["PCIDEVICE_MELLANOX_COM_MLNX_SRIOV_RDMA"]
    assert vf in ("0000:86:00.2", "0000:86:00.3")
    info = json.loads(response.envs["PCIDEVICE_MELLANOX_COM_MLNX_SRIOV_RDMA_INFO"])
    assert info[vf]["generic"] == {"deviceID": vf}
    assert info[vf]["rdma"]["rdma_cm"] == "/dev/infiniband/rdma_cm"
    assert "intel.com/intel_sriov_netdevice" not in kubelet.resources


def test_use_cdi_through_the_host(standard: FakeRdmaNode, kubelet, multidp_host, tmp_path) -> None:
    config = tmp_path / "config.json"  # Mellanox's file, with its --use-cdi as useCdi
    config.write_text('{"configList": [{"resourceName": "ib", "rdmaHcaMax": 2, '
                      '"selectors": {"linkTypes": ["infiniband"]}}]}')
    cdi_dir = tmp_path / "cdi"
    multidp_host({"rdma": multidp_rdma.plugin}, drivers={"rdma": {"configFile": str(config), "useCdi": True}},
                 sysfs_root=standard.sys, dev_root=standard.dev, cdi_dir=cdi_dir)
    kubelet.wait_devices("rdma/ib", lambda v: v.allocatable == 2, WAIT_S, "two shares")
    response = kubelet.allocate("rdma/ib", 1)
    assert response.devices == []
    assert response.annotations == {
        "cdi.k8s.io/nvidia.com_net-rdma": "nvidia.com/net-rdma=0000:5e:00.0,nvidia.com/net-rdma=0000:3b:00.0"}
    [spec_file] = cdi_dir.iterdir()
    spec = json.loads(spec_file.read_text())
    assert spec["kind"] == "nvidia.com/net-rdma"
    assert sorted(d["name"] for d in spec["devices"]) == ["0000:3b:00.0", "0000:5e:00.0"]
