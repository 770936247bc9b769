"""A kubelet stand-in for tests: the kubelet's side of the Device Plugin API v1beta1.

It behaves as the kubelet's device manager does (docs/design.md, "Endpoints and the kubelet"): serves
Registration on ``kubelet.sock``; checks the version and the resource name and
answers UNKNOWN when they are wrong; dials the plugin back (10 s) and asks
GetDevicePluginOptions before Register returns; consumes ListAndWatch in the
background, each message a full snapshot; marks every device Unhealthy when the
stream ends; allocates like the kubelet (healthy minus allocated, preferred
allocation if offered, one Allocate with one container); and restarts like the
kubelet (every socket in the directory removed, a new kubelet.sock created).
"""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from multidp.api import pb, pb_grpc
from multidp.names import resource_name_problem
from multidp.serving.sockets import API_VERSION, KUBELET_SOCKET_NAME
from multidp.testing.kubeletview import AllocationFailed, KubeletAllocation, PluginOptions, Registration, ResourceView

DIAL_TIMEOUT_S = 10.0


class KubeletStandIn(pb_grpc.RegistrationServicer):
    """The kubelet's device manager, as far as a device plugin can tell.

    ``register_delay`` makes Register slow; ``refuse`` makes it fail with that
    message; ``hang`` accepts the connection but never answers Register, and
    ``stall`` does the same for the resource names it holds only.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.socket_path = self.directory / KUBELET_SOCKET_NAME
        self.resources: dict[str, ResourceView] = {}
        self.registrations: list[Registration] = []
        self.errors: list[str] = []
        self.restarts: list[float] = []  # time.monotonic() when each new kubelet.sock existed
        self.register_delay = 0.0
        self.refuse: str | None = None
        self.hang = False
        self.stall: set[str] = set()
        self._cond = threading.Condition()
        self._server: grpc.Server | None = None
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="kubelet")
        self._stop_hang = threading.Event()

    # Lifecycle -------------------------------------------------------------------

    def start(self) -> KubeletStandIn:
        """Serve ``kubelet.sock`` in the directory (created if missing); returns the stand-in."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._serve()
        return self

    def _serve(self) -> None:
        server = grpc.server(self._pool)
        pb_grpc.add_RegistrationServicer_to_server(self, server)
        server.add_insecure_port(f"unix:{self.socket_path}")
        server.start()
        self._server = server
        with self._cond:
            self.restarts.append(time.monotonic())
            self._cond.notify_all()

    def stop(self) -> None:
        """Stop serving and drop every plugin connection (sockets are left as they are)."""
        self._stop_hang.set()
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None
        for view in list(self.resources.values()):
            self._close(view)
        self.socket_path.unlink(missing_ok=True)

    def shutdown(self) -> None:
        """:meth:`stop`, and release the stand-in's threads: the end of its life."""
        self.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def restart(self) -> None:
        """Restart like the kubelet: remove every socket in the dir, then a new kubelet.sock."""
        self.stop()
        self._stop_hang.clear()
        for entry in self.directory.iterdir():
            try:
                if stat.S_ISSOCK(entry.lstat().st_mode):
                    entry.unlink()
            except FileNotFoundError:
                pass
        with self._cond:
            # Resources known from the checkpoint read 0/0 until they register again.
            for view in self.resources.values():
                view.devices = {}
                view.options = None
        self._serve()

    def _close(self, view: ResourceView) -> None:
        if view.channel is not None:
            view.channel.close()
            view.channel = None

    # Registration service ------------------------------------------------------------

    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.Empty:
        arrived = time.monotonic()
        if self.hang or request.resource_name in self.stall:
            self._stop_hang.wait()
            context.abort(grpc.StatusCode.UNAVAILABLE, "kubelet stand-in stopped")
        if self.register_delay:
            time.sleep(self.register_delay)
        if self.refuse:
            context.abort(grpc.StatusCode.UNKNOWN, self.refuse)
        if request.version != API_VERSION:
            message = (f'requested API version "{request.version}" is not supported by kubelet. '
                       f'Supported version is ["{API_VERSION}"]')
            self._error(message)
            context.abort(grpc.StatusCode.UNKNOWN, message)
        if resource_name_problem(request.resource_name):
            message = f'the ResourceName "{request.resource_name}" is invalid'
            self._error(message)
            context.abort(grpc.StatusCode.UNKNOWN, message)
        # Its own subchannel, as the kubelet's fresh dial: no reconnect backoff inherited.
        channel = grpc.insecure_channel(f"unix:{self.directory / request.endpoint}",
                                        options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            grpc.channel_ready_future(channel).result(timeout=DIAL_TIMEOUT_S)
            options = PluginOptions.from_wire(
                pb_grpc.DevicePluginStub(channel).GetDevicePluginOptions(pb.Empty(), timeout=DIAL_TIMEOUT_S))
        except (grpc.FutureTimeoutError, grpc.RpcError) as exc:
            channel.close()
            message = f"failed to dial device plugin {request.endpoint}: {exc}"
            self._error(message)
            context.abort(grpc.StatusCode.UNKNOWN, message)
        with self._cond:
            view = self.resources.get(request.resource_name)
            if view is not None:
                self._close(view)  # a second Register replaces the first
            else:
                view = self.resources[request.resource_name] = ResourceView(request.resource_name)
            view.endpoint, view.options, view.channel = request.endpoint, options, channel
            view.stream_open = True
            self.registrations.append(
                Registration(request.resource_name, request.endpoint, request.version, options, arrived)
            )
            self._cond.notify_all()
        threading.Thread(target=self._watch, args=(view, channel), daemon=True,
                         name=f"law-{request.resource_name}").start()
        return pb.Empty()

    def _error(self, message: str) -> None:
        with self._cond:
            self.errors.append(message)
            self._cond.notify_all()

    def _watch(self, view: ResourceView, channel: grpc.Channel) -> None:
        stub = pb_grpc.DevicePluginStub(channel)
        try:
            for response in stub.ListAndWatch(pb.Empty()):
                received = time.monotonic()  # before this stand-in's own (slow, Python) bookkeeping
                devices = {}
                for d in response.devices:
                    nodes = d.topology.nodes
                    devices[d.ID] = (d.health, tuple([n.ID for n in nodes]) if nodes else ())
                with self._cond:
                    if view.channel is not channel:
                        return
                    view.devices = devices
                    view.updates += 1
                    view.last_update_at = received
                    self._cond.notify_all()
        except (grpc.RpcError, ValueError):  # ValueError: the channel was closed before the call
            pass
        with self._cond:
            if view.channel is channel or view.channel is None:
                # The stream ended: every device of the resource is unhealthy at once.
                view.devices = {i: ("Unhealthy", numa) for i, (_, numa) in view.devices.items()}
                view.stream_open = False
                view.updates += 1
                self._cond.notify_all()

    # Waiting ---------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        """Wait until ``predicate()`` holds; AssertionError after ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def registration_count(self, resource: str) -> int:
        """How many Register calls for ``resource`` this stand-in has taken (restarts included)."""
        return sum(r.resource == resource for r in self.registrations)

    def wait_registered(self, resource: str, count: int = 1, timeout: float = 10.0) -> Registration:
        """Wait until ``resource`` has registered ``count`` times in all (restarts included).

        Returns the latest :class:`Registration` of it.
        """
        def done() -> bool:
            return self.registration_count(resource) >= count

        self.wait_for(done, timeout, f"{resource} registered {count} time(s)")
        return [r for r in self.registrations if r.resource == resource][-1]

    def wait_devices(self, resource: str, predicate: Callable[[ResourceView], bool], timeout: float = 10.0,
                     what: str = "devices") -> ResourceView:
        """Wait until the kubelet's view of ``resource`` satisfies ``predicate``; returns the view.

        AssertionError naming ``what`` after ``timeout`` seconds.
        """
        def done() -> bool:
            view = self.resources.get(resource)
            return view is not None and predicate(view)

        self.wait_for(done, timeout, f"{resource}: {what}")
        return self.resources[resource]

    # Acting like the kubelet -----------------------------------------------------------

    def stub(self, resource: str) -> pb_grpc.DevicePluginStub:
        """A client to the plugin of ``resource`` (for requests the kubelet would not send)."""
        view = self.resources[resource]
        if view.channel is None:
            raise AssertionError(f"{resource} has no live connection")
        return pb_grpc.DevicePluginStub(view.channel)

    def allocate(self, resource: str, count: int) -> KubeletAllocation:
        """Allocate ``count`` devices for one container the way the kubelet does.

        Healthy and unallocated IDs are the candidates; when the plugin offers
        GetPreferredAllocation its choice is taken first; then one Allocate for one
        container. The IDs stay allocated until :meth:`free`. Raises
        :class:`AllocationFailed` where the kubelet would fail the pod.
        """
        with self._cond:
            view = self.resources.get(resource)
            if view is None or view.options is None:
                raise AllocationFailed(f"resource {resource} is not registered")
            candidates = view.free
            options = view.options
        if len(candidates) < count:
            raise AllocationFailed(f"requested {count} of {resource}, only {len(candidates)} available")
        chosen = candidates[:count]
        stub = self.stub(resource)
        try:
            if options.get_preferred_allocation_available:
                request = pb.PreferredAllocationRequest(container_requests=[
                    pb.ContainerPreferredAllocationRequest(available_deviceIDs=candidates, allocation_size=count)
                ])
                answer = stub.GetPreferredAllocation(request, timeout=10)
                picked = [i for i in answer.container_responses[0].deviceIDs if i in set(candidates)][:count]
                chosen = picked + [i for i in candidates if i not in picked][: count - len(picked)]
            response = stub.Allocate(
                pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=chosen)]), timeout=10
            )
        except grpc.RpcError as exc:
            raise AllocationFailed(f"Allocate failed due to {exc.details()}, which is unexpected") from exc
        if not response.container_responses:
            raise AllocationFailed("Allocate returned no container responses")
        with self._cond:
            view.allocated.update(chosen)
        return KubeletAllocation.from_wire(chosen, response.container_responses[0])

    def restore_checkpoint(self, held: dict[str, list[str]]) -> None:
        """Start from a checkpoint: ``held`` maps a resource to the IDs running pods hold (for example
        from the plugin this one replaces). Like the kubelet, the stand-in never hands those IDs out
        again, whoever advertises them; :attr:`ResourceView.stale` lists those no plugin advertises."""
        with self._cond:
            for resource, ids in held.items():
                view = self.resources.setdefault(resource, ResourceView(resource))
                view.allocated.update(ids)
            self._cond.notify_all()

    def free(self, resource: str, ids: list[str] | None = None) -> None:
        """Forget an allocation, as when its pod ends (``ids`` None: all of ``resource``'s)."""
        with self._cond:
            view = self.resources[resource]
            view.allocated.difference_update(ids if ids is not None else set(view.allocated))
