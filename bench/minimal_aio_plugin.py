"""The minimal plugin's shape on grpc.aio: N resources, one ``grpc.aio.server`` each, all on one event loop.

An informative row beside minimal_plugin.py (the baseline the bars use): what the same plugins cost
idle, and how fast they register, when the front-end is an event loop instead of thread pools. Same
devices, same answers, same resource names and sockets; each server serves, then registers.
Usage: python minimal_aio_plugin.py PLUGIN_DIR DEVICE_COUNT [RESOURCES]
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import grpc

from multidp.api import pb, pb_grpc

RESOURCE = "bench.multidp.io/dev"


class AioPlugin(pb_grpc.DevicePluginServicer):
    def __init__(self, count: int, stop: asyncio.Event) -> None:
        self.devices = [pb.Device(ID=f"dev-{i}", health="Healthy") for i in range(count)]
        self.stop = stop

    async def GetDevicePluginOptions(self, request, context):
        return pb.DevicePluginOptions(get_preferred_allocation_available=False)

    async def ListAndWatch(self, request, context):
        yield pb.ListAndWatchResponse(devices=self.devices)
        await self.stop.wait()

    async def Allocate(self, request, context):
        return pb.AllocateResponse(container_responses=[
            pb.ContainerAllocateResponse(envs={"BENCH_DEVICES": ",".join(c.devices_ids)},
                                         devices=[pb.DeviceSpec(container_path="/dev/null", host_path="/dev/null",
                                                                permissions="rw")])
            for c in request.container_requests])


async def serve(plugin_dir: str, count: int, resources: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    plugin = AioPlugin(count, stop)
    servers = []
    names = [RESOURCE] + [f"{RESOURCE}-{n}" for n in range(1, resources)]
    for n, resource in enumerate(names):
        server = grpc.aio.server()
        pb_grpc.add_DevicePluginServicer_to_server(plugin, server)
        endpoint = "minimal.sock" if n == 0 else f"minimal-{n}.sock"
        server.add_insecure_port(f"unix:{os.path.join(plugin_dir, endpoint)}")
        await server.start()
        servers.append(server)
        async with grpc.aio.insecure_channel(f"unix:{os.path.join(plugin_dir, 'kubelet.sock')}") as channel:
            await pb_grpc.RegistrationStub(channel).Register(
                pb.RegisterRequest(version="v1beta1", endpoint=endpoint, resource_name=resource), timeout=10)
    await stop.wait()
    await asyncio.gather(*(server.stop(None) for server in servers))


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1))
