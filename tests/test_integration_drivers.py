"""The host with the real drivers (simulated hardware), as a node runs them: a node label flipped live.

These need the drivers installed next to the host (``make test`` installs them);
without them the tests are skipped, with the reason.
"""

from __future__ import annotations

import importlib.util
import time

import pytest

from multidp.testing import FakeApiServer, KubeletStandIn, running_host

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("multidp_rdma", "multidp_fpga")),
    reason="needs multidp-rdma and multidp-fpga installed (make test installs every driver)",
)


def test_flipping_the_rdma_label_starts_and_stops_rdma_while_fpga_streams(kubelet: KubeletStandIn, tmp_path):
    api = FakeApiServer("node-1", {"multidp.io/rdma": "false"})
    env = {"NODE_NAME": "node-1", "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    try:
        with running_host(kubelet.directory, installed=True, simulate=True, drivers={}, environ=env) as host:
            host_drivers = host.settings.drivers
            assert host_drivers is None  # every installed driver may run; labels decide
            kubelet.wait_for(lambda: any(r.startswith("fpga.intel.com/") for r in kubelet.resources),
                             what="FPGA resources registered")
            fpga = {r: v for r, v in kubelet.resources.items() if r.startswith(("fpga.", "amd."))}
            assert fpga and not any(r.startswith("rdma/") for r in kubelet.resources)
            kubelet.wait_for(lambda: all(v.updates >= 1 for v in fpga.values()), what="FPGA lists received")
            before = {r: (v.updates, v.stream_open) for r, v in fpga.items()}
            for _ in range(2):
                flipped = time.monotonic()
                api.set_labels(multidp_io_rdma="true")
                kubelet.wait_devices("rdma/hca", lambda v: v.capacity > 0 and v.stream_open, timeout=5)
                started_s = time.monotonic() - flipped
                flipped = time.monotonic()
                api.set_labels(multidp_io_rdma="false")
                kubelet.wait_devices("rdma/hca", lambda v: v.capacity == 0 and not v.stream_open, timeout=5)
                stopped_s = time.monotonic() - flipped
                assert started_s < 5 and stopped_s < 5  # generous; the bar (1 s) is measured in bench/
            after = {r: (v.updates, v.stream_open) for r, v in fpga.items()}
            assert after == before, "the FPGA resources were disturbed"
    finally:
        api.close()
