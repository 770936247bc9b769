"""The DevicePlugin gRPC service of one resource (registered by :func:`multidp.serving.wire.add_to_server`).

This is the only place where driver dataclasses become v1beta1 messages. Each
RPC validates against the resource's current snapshot (the error contract in
:mod:`multidp.serving.contract`), calls the driver through its runner (deadline,
isolation) and converts the answer, de-duplicating device nodes and mounts.
An answer of the wrong shape is refused (Allocate) or replaced by the host's
pick (GetPreferredAllocation), logged once per problem; streams are capped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, NoReturn, TypeAlias, cast

import grpc

from multidp.api import pb
from multidp.driver import Driver
from multidp.errors import BadDriverAnswer, CdiUnavailable, DriverCallError, MultidpError, TooManyStreams
from multidp.model import ContainerAllocation
from multidp.plugins.runner import DriverRunner
from multidp.serving.cdi import ANNOTATION_PREFIX, CDIRegistry
from multidp.serving.contract import allocation_problem, allocation_requests, preference_requests
from multidp.serving.lograte import LogOnce, RateLimitedLog
from multidp.serving.picking import answer_problem, numa_pick, repaired
from multidp.serving.resource import ResourceState, Snapshot
from multidp.serving.stats import ResourceStats
from multidp.serving.status import answer, status_code

log = logging.getLogger(__name__)

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

# What each RPC is called in the kubelet-facing messages.
CALLS = {"Allocate": "allocation", "GetPreferredAllocation": "preferred allocation",
         "PreStartContainer": "pre-start", "GetDevicePluginOptions": "options", "ListAndWatch": "list"}

# ListAndWatch streams one resource serves at once. The kubelet keeps one (two for a moment when it
# registers again); a client opening thousands would hold memory for each (on the sync server they
# once held 2,806 threads and 188 MB).
MAX_STREAMS = 8


def container_response(alloc: ContainerAllocation) -> pb.ContainerAllocateResponse:
    """A driver's answer as a v1beta1 message, device nodes and mounts de-duplicated."""
    response = pb.ContainerAllocateResponse(envs=alloc.envs, annotations=alloc.annotations)
    seen: set[str] = set()
    for node in alloc.device_nodes:
        if node.container_path not in seen:
            seen.add(node.container_path)
            response.devices.add(
                container_path=node.container_path, host_path=node.host_path, permissions=node.permissions
            )
    seen.clear()
    for mount in alloc.mounts:
        if mount.container_path not in seen:
            seen.add(mount.container_path)
            response.mounts.add(
                container_path=mount.container_path, host_path=mount.host_path, read_only=mount.read_only
            )
    names = list(dict.fromkeys(alloc.cdi_devices))
    if names and alloc.cdi_field:
        for name in names:
            response.cdi_devices.add(name=name)
    if names and alloc.cdi_annotation_key:
        response.annotations[ANNOTATION_PREFIX + alloc.cdi_annotation_key] = ",".join(names)
    return response


class DevicePluginService:
    """Serves one resource of one driver: a coroutine per RPC of the v1beta1 DevicePlugin service.

    The RPCs run on the serving event loop (:mod:`multidp.serving.eventloop`); driver code
    runs on the driver's own threads (:meth:`DriverRunner.call_async`), so a slow or hung
    driver never holds up the loop, and an idle stream costs no thread.

    Registered by :func:`multidp.serving.wire.add_to_server`, which finds the
    methods through the service descriptor: an RPC without a method here fails
    registration (and so the tests) instead of answering UNIMPLEMENTED.
    """

    def __init__(self, state: ResourceState, runner: DriverRunner, cdi: CDIRegistry) -> None:
        self.state = state
        self.runner = runner
        self.cdi = cdi
        self.stopping = threading.Event()
        self.streams = 0  # ListAndWatch streams open now
        self.stats = ResourceStats()
        self._streams_lock = threading.Lock()
        self._streams_warned = False  # a refused stream is logged once until the streams are down to one
        self._allocate_problems = LogOnce(log)
        self._preference_problems = LogOnce(log)
        self._refusals = RateLimitedLog(log)  # requests refused for the kubelet's (or a caller's) reasons
        self._driver_prefers = self._prefers(runner)
        self._pre_start = self._has_pre_start(runner)

    @staticmethod
    def _prefers(runner: DriverRunner) -> bool:
        return type(runner.driver).preferred_allocation is not Driver.preferred_allocation

    @staticmethod
    def _has_pre_start(runner: DriverRunner) -> bool:
        """Read once here, on the host's thread: ``has_pre_start`` may be a driver's property, and
        driver code never runs on the event loop, where a slow one would hold every resource up."""
        try:
            return bool(runner.driver.has_pre_start)
        except Exception as exc:  # noqa: BLE001 - the driver's property raised
            log.error("driver %s: has_pre_start failed (%s: %s); pre-start is off", runner.name,
                      type(exc).__name__, exc)
            return False

    def use_runner(self, runner: DriverRunner) -> None:
        """Call the driver through ``runner`` from now on (see :meth:`Endpoint.rebind`)."""
        self._driver_prefers = self._prefers(runner)
        self._pre_start = self._has_pre_start(runner)
        self.runner = runner

    @property
    def resource(self) -> str:
        return self.state.name

    def options(self) -> pb.DevicePluginOptions:
        return pb.DevicePluginOptions(
            pre_start_required=self._pre_start, get_preferred_allocation_available=True
        )

    async def GetDevicePluginOptions(self, request: pb.Empty, context: Context) -> pb.DevicePluginOptions:
        return self.options()

    async def ListAndWatch(self, request: pb.Empty, context: Context) -> AsyncIterator[bytes]:
        """Full list at once, then again on every change (already serialized, see add_to_server)."""
        await self._open_stream(context)
        try:
            async for message in self._watch():
                yield message
        finally:
            with self._streams_lock:
                self.streams -= 1
                self._streams_warned &= self.streams > 1  # warn again after the flood

    async def _open_stream(self, context: Context) -> None:
        """Count a new stream in, or refuse it (RESOURCE_EXHAUSTED) when MAX_STREAMS are open."""
        with self._streams_lock:
            open_now = self.streams
            if open_now < MAX_STREAMS:
                self.streams += 1
                return
            warn, self._streams_warned = not self._streams_warned, True
        if warn:
            log.warning("resource %s: %d ListAndWatch streams are open; refusing more (at most %d per resource, "
                        "the kubelet needs one)", self.resource, open_now, MAX_STREAMS)
        await self.refuse("list", TooManyStreams(f'list for "{self.resource}" refused: {open_now} ListAndWatch streams '
                                           f"are open already (at most {MAX_STREAMS} per resource)"), context)

    async def _watch(self) -> AsyncIterator[bytes]:
        """Each new snapshot's message, until the host stops the resource. A peer that goes away
        cancels the RPC, which ends this at its ``await``."""
        changed = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wake() -> None:  # called by the state, on whichever thread changed it
            try:
                loop.call_soon_threadsafe(changed.set)
            except RuntimeError:  # the loop closed: the stream is over
                pass

        self.state.listen(wake)
        try:
            version = -1
            while not self.stopping.is_set():
                changed.clear()  # before reading: a change from now on sets it again
                snapshot = self.state.snapshot
                if snapshot.version == version:
                    await changed.wait()
                    continue
                version = snapshot.version
                yield snapshot.message  # encoded when the snapshot was made (see ResourceState)
                self.state.mark_sent(version)
        finally:
            self.state.unlisten(wake)

    async def refuse(self, call: str, error: MultidpError, context: Context) -> NoReturn:
        """End the RPC with the status the error table gives ``error``; log what is the driver's fault."""
        code, message = answer(error, call, self.resource)
        if isinstance(error, BadDriverAnswer):
            self._allocate_problems(logging.ERROR, f"resource {self.resource}: {message}")
        elif code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN):
            log.error("resource %s: %s", self.resource, message)
        else:  # the pod fails all the same: say why (an unknown ID, a vanished device, a CDI spec missing)
            self._refusals(logging.WARNING, f"resource {self.resource}: {call} refused ({code.name}): {message}",
                           resource=self.resource, driver=self.state.driver, code=code.name)
        await context.abort(code, message)
        raise AssertionError("context.abort returned")  # grpc raises; for type checkers

    async def refuse_undecodable(self, method: str, error: MultidpError, context: Context) -> NoReturn:
        """A request protobuf could not parse (see :mod:`multidp.serving.wire`)."""
        if method == "Allocate":
            self.stats.record(0.0, status_code(error).name)
        await self.refuse(CALLS.get(method, method), error, context)

    async def Allocate(self, request: pb.AllocateRequest, context: Context) -> pb.AllocateResponse:
        started = time.perf_counter()
        try:
            response = await self._allocate(request)
        except asyncio.CancelledError:  # the kubelet gave up (its deadline, or it went away)
            self.stats.record(time.perf_counter() - started, "CANCELLED")
            raise
        except MultidpError as error:
            self.stats.record(time.perf_counter() - started, status_code(error).name)
            await self.refuse("allocation", error, context)
        self.stats.record(time.perf_counter() - started)
        return response

    async def _allocate(self, request: pb.AllocateRequest) -> pb.AllocateResponse:
        containers = [list(c.devices_ids) for c in request.container_requests]
        requests = allocation_requests(self.resource, self.state.snapshot, containers)
        runner = self.runner
        responses = []
        for req in requests:
            alloc = await runner.call_async("allocate", runner.driver.allocate, req,
                                            timeout=runner.timeouts.allocate)
            responses.append(self._convert(alloc))
        return pb.AllocateResponse(container_responses=responses)

    def _convert(self, alloc: Any) -> pb.ContainerAllocateResponse:
        """The driver's answer as a message; BadDriverAnswer (INTERNAL, logged once per problem) if unusable."""
        driver = self.runner.name
        problem = allocation_problem(alloc)
        if problem is None:
            alloc = cast(ContainerAllocation, alloc)  # allocation_problem checked it
            if alloc.cdi_devices and (cdi_problem := self.cdi.problem(driver, alloc.cdi_devices)):
                raise CdiUnavailable(f'allocation for "{self.resource}" needs CDI devices, but {cdi_problem}')
            try:
                response = container_response(alloc)
            except Exception as exc:  # noqa: BLE001 - protobuf refusing a value the type checks let through
                problem = f"an invalid answer ({type(exc).__name__}: {exc})"
            else:
                self._allocate_problems.forget()
                return response
        raise BadDriverAnswer(f'allocation for "{self.resource}" failed: driver {driver} allocate returned {problem}')

    async def GetPreferredAllocation(
        self, request: pb.PreferredAllocationRequest, context: Context
    ) -> pb.PreferredAllocationResponse:
        snapshot = self.state.snapshot
        containers = [
            (list(c.available_deviceIDs), list(c.must_include_deviceIDs), c.allocation_size)
            for c in request.container_requests
        ]
        try:
            requests = preference_requests(self.resource, snapshot, containers)
        except MultidpError as error:
            await self.refuse("preferred allocation", error, context)
        response = pb.PreferredAllocationResponse()
        for req in requests:
            response.container_responses.add(deviceIDs=await self._prefer(req, snapshot))
        return response

    async def _prefer(self, req: Any, snapshot: Snapshot) -> list[str]:
        if not self._driver_prefers:
            return numa_pick(req, snapshot)
        runner = self.runner
        try:
            picked = await runner.call_async(
                "preferred allocation",
                runner.driver.preferred_allocation,
                req,
                timeout=runner.timeouts.preferred_allocation,
            )
        except DriverCallError as exc:
            self._preference_problems(logging.WARNING, f"resource {self.resource}: {exc}; picking by NUMA instead")
            return numa_pick(req, snapshot)
        if picked is None:
            return numa_pick(req, snapshot)
        if isinstance(picked, str):
            picked = [picked]
        wrong = answer_problem(picked)
        if wrong:
            self._preference_problems(logging.WARNING, f"resource {self.resource}: driver {runner.name} preferred "
                                                       f"allocation returned {wrong}; picking by NUMA instead")
            return numa_pick(req, snapshot)
        ids, problem = repaired(req, list(picked), numa_pick(req, snapshot))
        if problem:
            self._preference_problems(logging.WARNING, f"resource {self.resource}: driver {runner.name} "
                                                       f"preferred {problem}; answer repaired")
        else:
            self._preference_problems.forget()
        return ids

    async def PreStartContainer(
        self, request: pb.PreStartContainerRequest, context: Context
    ) -> pb.PreStartContainerResponse:
        runner = self.runner
        if not self._pre_start:
            return pb.PreStartContainerResponse()
        snapshot = self.state.snapshot
        ids = list(request.devices_ids)
        try:
            requests = allocation_requests(self.resource, snapshot, [ids])
            await runner.call_async(
                "pre-start", runner.driver.pre_start, self.resource, requests[0].device_ids,
                timeout=runner.timeouts.pre_start,
            )
        except MultidpError as error:
            await self.refuse("pre-start", error, context)
        return pb.PreStartContainerResponse()
