"""The baseline: the smallest sensible device plugin written directly on grpcio (sync server).

One resource, N devices, a constant Allocate answer; serves, then registers.
The bench drives it with the same kubelet stand-in as multidp, in the same
run, so the ratios in bench/run.py compare like with like.
Usage: python minimal_plugin.py PLUGIN_DIR DEVICE_COUNT
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
    plugin = Plugin(count)
    server = grpc.server(ThreadPoolExecutor(8))
    pb_grpc.add_DevicePluginServicer_to_server(plugin, server)
    endpoint = "minimal.sock"
    server.add_insecure_port(f"unix:{os.path.join(plugin_dir, endpoint)}")
    server.start()
    with grpc.insecure_channel(f"unix:{os.path.join(plugin_dir, 'kubelet.sock')}") as channel:
        pb_grpc.RegistrationStub(channel).Register(
            pb.RegisterRequest(version="v1beta1", endpoint=endpoint, resource_name=RESOURCE), timeout=10)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    plugin.stop.set()
    server.stop(None)


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
