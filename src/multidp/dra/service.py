"""The DRA gRPC services of one driver on the serving event loop: Prepare / Unprepare and health.

One set of message classes (v1) serves every version the kubelets of Kubernetes 1.34 and later may
pick (:mod:`multidp.api.services`): the DRA service as v1 and v1beta1, the health stream as v1,
v1beta1 and v1alpha1. Prepare and Unprepare run off the loop (they read the API server and call the
driver); each claim is answered on its own, so one bad claim never fails the others, and the claims
of one Prepare are read from the API server at the same time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol

import grpc

from multidp.api import dra_v1_pb2 as dra
from multidp.api import drahealth_v1_pb2 as health
from multidp.api.services import DRA_SERVICES, HEALTH_SERVICES, PREPARE, UNPREPARE, WATCH
from multidp.dra.claims import ClaimRef
from multidp.dra.prepare import ClaimPreparer, PrepareResult

log = logging.getLogger(__name__)

HEALTH_RESEND_S = 30.0  # the full list again, so a kubelet's view never goes stale while nothing changes
HEALTH_TIMEOUT_S = 90  # how long the kubelet may trust one message (three resends)
MAX_MESSAGE_BYTES = 1024  # the kubelet's limit on a health message
MAX_BUDGET_S = 40.0  # for a caller without a deadline: within the kubelet's 45 s all the same
ANSWER_MARGIN_S = 1.0  # of the caller's deadline, kept for answering
WORKERS = 8  # claims of one driver worked on at once (the API reads; the rest takes turns)


def _claims(request: Any) -> list[ClaimRef]:
    return [ClaimRef(c.namespace, c.uid, c.name) for c in request.claims]


def _prepared(result: PrepareResult) -> Any:
    if result.error:
        return dra.NodePrepareResourceResponse(error=result.error)
    answer = dra.NodePrepareResourceResponse()
    for d in result.devices:
        device = answer.devices.add(request_names=[d.request], pool_name=d.pool, device_name=d.device,
                                    cdi_device_ids=list(d.cdi_ids))
        if d.share_id is not None:
            device.share_id = d.share_id
    return answer


def clip(message: str) -> str:
    """``message`` cut to the kubelet's 1,024 bytes, on a character boundary."""
    data = message.encode()
    if len(data) <= MAX_MESSAGE_BYTES:
        return message
    return data[:MAX_MESSAGE_BYTES - 3].decode(errors="ignore") + "..."


class Stats(Protocol):
    def prepared(self, ok: bool, seconds: float) -> None: ...
    def unprepared(self, ok: bool, seconds: float) -> None: ...


class Served(Protocol):
    """What the service needs of its front-end (:class:`multidp.dra.frontend.DraFrontend`)."""

    @property
    def preparer(self) -> ClaimPreparer: ...
    @property
    def stats(self) -> Stats: ...

    def health(self) -> dict[tuple[str, str], Any]: ...
    def listen(self, wake: Callable[[], None]) -> None: ...
    def unlisten(self, wake: Callable[[], None]) -> None: ...


class DraService:
    """The handlers of one DRA front-end; :meth:`handlers` registers them under every service name."""

    def __init__(self, frontend: Served) -> None:
        self.frontend = frontend
        # Its own threads: one driver's stalls (a hung allocate, an API server that does not answer) never
        # hold up another driver's Prepare or Unprepare.
        self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="dra-claims")
        self._running: dict[str, asyncio.Future[PrepareResult]] = {}  # claim UID -> its Prepare at work

    async def prepare(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        left = context.time_remaining()
        budget = min(left - ANSWER_MARGIN_S, MAX_BUDGET_S) if left is not None else MAX_BUDGET_S
        claims = _claims(request)
        results = await asyncio.gather(*(self._prepare_one(claim, budget) for claim in claims), return_exceptions=True)
        answer = dra.NodePrepareResourcesResponse()
        for claim, result in zip(claims, results, strict=True):
            if isinstance(result, BaseException):  # never expected: _prepare_one answers every claim itself
                result = PrepareResult(error=f"claim {claim}: internal error: {type(result).__name__}: {result}")
            answer.claims[claim.uid].CopyFrom(_prepared(result))
        return answer

    async def _prepare_one(self, claim: ClaimRef, budget: float) -> PrepareResult:
        """One claim, answered within ``budget`` seconds: a claim still at work then is answered as not
        prepared in time, and goes on; a retry of it joins that work instead of starting another."""
        started = time.monotonic()
        work = self._running.get(claim.uid)
        if work is None:
            work = asyncio.get_running_loop().run_in_executor(self.executor, self.frontend.preparer.prepare, claim)
            self._running[claim.uid] = work
            work.add_done_callback(partial(self._done, claim.uid))
        try:
            result: PrepareResult = await asyncio.wait_for(asyncio.shield(work), max(budget, 0.0))
        except TimeoutError:
            result = PrepareResult(error=f"claim {claim}: not prepared within the kubelet's deadline ({budget:.0f} s "
                                         "were left for it); still at work, so the kubelet's next try may find it "
                                         "done")
        self.frontend.stats.prepared(not result.error, time.monotonic() - started)
        return result

    def _done(self, uid: str, _: object) -> None:
        self._running.pop(uid, None)

    async def unprepare(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        answer = dra.NodeUnprepareResourcesResponse()
        loop = asyncio.get_running_loop()
        for claim in _claims(request):
            started = time.monotonic()
            error = await loop.run_in_executor(self.executor, self.frontend.preparer.unprepare, claim)
            self.frontend.stats.unprepared(not error, time.monotonic() - started)
            answer.claims[claim.uid].error = error
        return answer

    def _health_message(self) -> Any:
        return health.NodeWatchResourcesResponse(devices=[
            health.DeviceHealth(
                device=health.DeviceIdentifier(pool_name=pool, device_name=name),
                health=health.HEALTHY if state.healthy else health.UNHEALTHY,
                last_updated_time=state.since, health_check_timeout_seconds=HEALTH_TIMEOUT_S,
                message=clip(state.reason))
            for (pool, name), state in sorted(self.frontend.health().items())])

    async def watch(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        changed = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(changed.set)

        self.frontend.listen(wake)
        try:
            while True:
                changed.clear()
                yield self._health_message()
                try:
                    await asyncio.wait_for(changed.wait(), HEALTH_RESEND_S)
                except TimeoutError:
                    pass
        finally:
            self.frontend.unlisten(wake)

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """Generic handlers for every DRA and health service name this host serves."""
        def unary(fn: Callable[..., Any], request: Any, response: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=request.FromString,
                                                       response_serializer=response.SerializeToString)

        dra_methods = {
            PREPARE: unary(self.prepare, dra.NodePrepareResourcesRequest, dra.NodePrepareResourcesResponse),
            UNPREPARE: unary(self.unprepare, dra.NodeUnprepareResourcesRequest, dra.NodeUnprepareResourcesResponse),
        }
        watch = {WATCH: grpc.unary_stream_rpc_method_handler(
            self.watch, request_deserializer=health.NodeWatchResourcesRequest.FromString,
            response_serializer=health.NodeWatchResourcesResponse.SerializeToString)}
        return ([grpc.method_handlers_generic_handler(name, dra_methods) for name in DRA_SERVICES]
                + [grpc.method_handlers_generic_handler(name, watch) for name in HEALTH_SERVICES])
