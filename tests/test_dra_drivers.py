"""The three real drivers through DRA on simulated hardware: a claim each, prepared with CDI IDs that
the specs in the CDI folder really define, and unprepared again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from multidp.testing import FakeApiServer, running_host, short_socket_dir
from multidp.testing.drakubelet import DraKubelet

NODE = "node-a"
DRIVERS = ("nvidia", "rdma", "fpga")


def defined_cdi_names(cdi_dir: Path) -> set[str]:
    """Every fully qualified CDI name the spec files in ``cdi_dir`` define."""
    names = set()
    for path in cdi_dir.glob("*.json"):
        spec = json.loads(path.read_text())
        names.update(f"{spec['kind']}={device['name']}" for device in spec["devices"])
    return names


@pytest.mark.parametrize("driver", DRIVERS)
def test_each_driver_prepares_a_claim_with_working_cdi_ids(driver: str):
    root = short_socket_dir()
    api = FakeApiServer(NODE)
    kubelet = DraKubelet(root / "reg")
    kubelet.start()
    others = {other: {"enabled": False} for other in DRIVERS if other != driver}
    dra_name = f"{driver}.multidp.io"
    try:
        with running_host(root / "dp", drivers={driver: {"frontend": "dra"}, **others}, installed=True, simulate=True,
                          environ={"KUBECONFIG": str(api.kubeconfig(root)), "NODE_NAME": NODE},
                          dra_plugins_dir=root / "pl", dra_registry_dir=root / "reg",
                          boot_id_file=root / "boot") as host:
            kubelet.wait_registered(dra_name, timeout=30)
            (frontend,) = [f for f in host.dra.all() if f.driver == driver]
            (pool, device), state = sorted(frontend.health().items())[0]
            assert state.healthy, state.reason
            obj = api.claims.add("ns", "c1", [{"request": "r", "driver": dra_name, "pool": pool, "device": device}])
            uid = obj["metadata"]["uid"]
            answer = kubelet.prepare(dra_name, [("ns", uid, "c1")])[uid]
            assert answer.error == ""
            ids = [i for d in answer.devices for i in d.cdi_ids]
            assert ids, "no CDI IDs"
            assert len(ids) == len(set(ids)), f"a CDI ID given twice: {ids}"
            defined = defined_cdi_names(root / "dp" / "cdi")
            assert set(ids) <= defined, (ids, sorted(defined))
            assert kubelet.unprepare(dra_name, [("ns", uid, "c1")]) == {uid: ""}
            assert not list((root / "dp" / "cdi").glob("*_claim-*.json"))
    finally:
        kubelet.stop()
        api.close()
        shutil.rmtree(root, ignore_errors=True)
