"""One asyncio event loop, on its own thread, for every endpoint's gRPC server.

grpcio's sync server gives each server a thread that wakes several times a
second to look for shutdown, idle or not: with a server and a spare per
resource, six resources cost about five times the CPU of one while nothing
happens. grpc.aio servers share the event loop and one completion queue, so
an idle host sleeps whatever the number of resources. The loop is also the one
timer for the endpoints' deferred work (stopping an old server, preparing a
spare), instead of a thread per job or per endpoint.

Everything else in the host stays on ordinary threads: they hand coroutines to
the loop with :meth:`ServingLoop.run` (wait for the result) or
:meth:`ServingLoop.spawn` (do not wait).

The loop is the process's, like grpc.aio's own engine (:meth:`ServingLoop.shared`):
grpcio delivers completion events to the loop a server was made on, even after
that server stopped, and a closed loop makes each such event an error. So a
host that stops (a test starts many in one process) stops its servers and
leaves the loop running; asleep, it costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

RUN_TIMEOUT_S = 10.0  # starting or stopping a server takes milliseconds; this bounds a wedged loop


_engine_lock = threading.RLock()
_engine_started = False
_shared: ServingLoop | None = None


def _keep_aio_engine() -> None:
    """Start grpc.aio's engine once for the life of the process.

    grpcio counts its aio objects and shuts the engine down when the last one goes,
    joining its poller thread; a host that stopped every server (a test, a reload
    that withdrew everything) could then hang there while calls were still in flight.
    Holding one count of our own keeps the engine up, at no cost while idle.
    """
    global _engine_started
    with _engine_lock:
        if not _engine_started:
            grpc.aio.init_grpc_aio()
            _engine_started = True


class LoopClosed(RuntimeError):
    """The loop's thread ended, which it never should: nothing can be run on it."""


class ServingLoop:
    """An event loop running on a daemon thread for the life of the process."""

    @staticmethod
    def shared() -> ServingLoop:
        """The process's serving loop, started on first use and never closed."""
        global _shared
        with _engine_lock:
            if _shared is None:
                _shared = ServingLoop()
            return _shared

    def __init__(self, name: str = "grpc-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_forever, name=name, daemon=True)
        self._thread.start()

    def _run_forever(self) -> None:
        asyncio.set_event_loop(self.loop)
        _keep_aio_engine()  # here, where an event loop is set: grpcio looks for one
        self.loop.set_exception_handler(self._unhandled)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    @staticmethod
    def _unhandled(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        log.error("event loop: %s", context.get("message", "unhandled error"), exc_info=context.get("exception"))

    @property
    def in_loop(self) -> bool:
        """The caller runs on the loop's thread (where :meth:`run` would wait for itself)."""
        return threading.current_thread() is self._thread

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = RUN_TIMEOUT_S) -> T:
        """Run ``coroutine`` on the loop and wait for its result (from any thread but the loop's);
        on TimeoutError it is cancelled, so a wedged loop leaves no server starting late."""
        if self.in_loop:
            coroutine.close()
            raise RuntimeError("ServingLoop.run called on the loop's own thread: it would wait for itself")
        future = self._submit(coroutine)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run ``coroutine`` on the loop without waiting; a failure is logged."""
        try:
            future = self._submit(coroutine)
        except LoopClosed:
            return
        future.add_done_callback(self._log_failure)

    def later(self, delay: float, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run ``make()``'s coroutine ``delay`` seconds from now (a timer on the loop, no thread)."""
        def due() -> None:
            self.loop.create_task(make()).add_done_callback(self._log_task_failure)

        try:
            self.loop.call_soon_threadsafe(self.loop.call_later, delay, due)
        except RuntimeError:  # the loop is closed
            pass

    def _submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        try:
            return asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        except RuntimeError as exc:  # the loop's thread ended (it never should)
            coroutine.close()
            raise LoopClosed("the serving loop is closed") from exc

    @staticmethod
    def _log_failure(future: Future[Any]) -> None:
        if not future.cancelled() and (error := future.exception()) is not None:
            log.error("event loop: a background job failed: %s", error, exc_info=error)

    @staticmethod
    def _log_task_failure(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("event loop: a deferred job failed: %s", error, exc_info=error)
