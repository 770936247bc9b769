"""The baseline: the smallest sensible device plugin written directly on grpcio (sync server).

One resource of N devices, a constant Allocate answer; serves, then registers. With a third argument it
serves that many resources from one process as that many incumbent-style plugins would: one sync
``grpc.server`` (its own thread pool), one socket and one Register each (``bench.multidp.io/dev``, then
``…/dev-1`` …). The bench drives it with the same kubelet stand-in as multidp, in the same run, so the
ratios in bench/run.py compare like with like. No thread of its own: the main thread waits for SIGTERM.
Usage: python minimal_plugin.py PLUGIN_DIR DEVICE_COUNT [RESOURCES]
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

from multidp.api import pb, pb_grpc

RESOURCE = "bench.multidp.io/dev"


def resource_names(count: int) -> list[str]:
    return [RESOURCE] + [f"{RESOURCE}-{n}" for n in range(1, count)]


class Plugin(pb_grpc.DevicePluginServicer):
    def __init__(self, count: int) -> None:
        self.devices = [pb.Device(ID=f"dev-{i}", health="Healthy") for i in range(count)]
        self.stop = threading.Event()

    def GetDevicePluginOptions(self, request, context):
        return pb.DevicePluginOptions(get_preferred_allocation_available=False)

    def ListAndWatch(self, request, context):
        yield pb.ListAndWatchResponse(devices=self.devices)
        self.stop.wait()

    def Allocate(self, request, context):
        return pb.AllocateResponse(container_responses=[
            pb.ContainerAllocateResponse(envs={"BENCH_DEVICES": ",".join(c.devices_ids)},
                                         devices=[pb.DeviceSpec(container_path="/dev/null", host_path="/dev/null",
                                                                permissions="rw")])
            for c in request.container_requests])


def main() -> None:
    plugin_dir, count = sys.argv[1], int(sys.argv[2])
    resources = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    plugin = Plugin(count)
    servers = []
    for n, resource in enumerate(resource_names(resources)):
        server = grpc.server(ThreadPoolExecutor(8))
        pb_grpc.add_DevicePluginServicer_to_server(plugin, server)
        endpoint = "minimal.sock" if n == 0 else f"minimal-{n}.sock"
        server.add_insecure_port(f"unix:{os.path.join(plugin_dir, endpoint)}")
        server.start()
        servers.append(server)
        with grpc.insecure_channel(f"unix:{os.path.join(plugin_dir, 'kubelet.sock')}") as channel:
            pb_grpc.RegistrationStub(channel).Register(
                pb.RegisterRequest(version="v1beta1", endpoint=endpoint, resource_name=resource), timeout=10)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    plugin.stop.set()
    for server in servers:
        server.stop(None)


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
