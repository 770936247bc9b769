"""Calling driver code on the driver's own threads, with a deadline.

Every Allocate pays this hand-off, so it is leaner than concurrent.futures: a
queue, a few worker threads, and one lock per call that the worker releases
when the answer is ready (about 20 µs against about 30-50 µs for
``executor.submit(...).result(timeout)``). A call whose caller gave up before
a worker took it is dropped, not run late.

Whatever driver code raises reaches the caller as an :class:`Exception`: a
``SystemExit`` or ``KeyboardInterrupt`` raised by the driver on its own thread
is the driver's failure, not a request to end the host, so it arrives wrapped
in :class:`DriverAborted` and the caller treats it like any other failure.
"""

from __future__ import annotations

import _thread
import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

QUICK_ANSWER_S = 0.002  # how long call_async holds the event loop for an answer before awaiting it


class CallTimeout(Exception):
    """The call did not finish within its deadline (it may still be running)."""


class PoolClosed(Exception):
    """The pool was closed (its driver is stopping)."""


class DriverAborted(Exception):
    """Driver code raised a BaseException that is not an Exception (SystemExit, KeyboardInterrupt...).

    Only ever made from what a thread running driver code and nothing else caught, so
    the host's own signals (taken with sigwait in the main thread) are never mistaken
    for it. ``error`` is what the driver raised.
    """

    def __init__(self, error: BaseException) -> None:
        self.error = error
        text = str(error)
        super().__init__(f"{type(error).__name__}: {text}" if text else type(error).__name__)
        self.__cause__ = error


def as_exception(error: BaseException) -> Exception:
    """What driver code raised, as an Exception the host can handle (SystemExit → DriverAborted)."""
    return error if isinstance(error, Exception) else DriverAborted(error)


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` of what driver code raised (a DriverAborted shows what it wraps)."""
    if isinstance(exc, DriverAborted):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class _Call:
    __slots__ = ("fn", "args", "done", "value", "error", "abandoned", "awaited")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...],
                 awaited: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None) -> None:
        self.fn = fn
        self.args = args
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.value: Any = None
        self.error: Exception | None = None
        self.abandoned = False
        self.awaited = awaited  # an event loop's caller: woken through its loop, not the lock


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():  # not given up on (cancelled by its deadline)
        future.set_result(None)


class CallPool:
    """Up to ``workers`` threads, each started when every existing one is busy."""

    def __init__(self, name: str, workers: int) -> None:
        self.name = name
        self.workers = workers
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._started = 0
        self._idle = 0
        self._closed = False
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float) -> Any:
        """``fn(*args)`` on a worker; its exception re-raised (see :class:`DriverAborted`);
        CallTimeout after ``timeout``."""
        if self._closed:
            raise PoolClosed(f"{self.name} is closed")
        if self._idle <= 0 and self._started < self.workers:  # read unlocked: _grow checks again
            self._grow()
        call = _Call(fn, args)
        self._queue.put(call)
        if not call.done.acquire(timeout=timeout):
            call.abandoned = True
            raise CallTimeout(f"no answer within {timeout:g} s")
        if call.error is not None:
            raise call.error
        return call.value

    async def call_async(self, fn: Callable[..., Any], *args: Any, timeout: float) -> Any:
        """:meth:`call` for a coroutine on an event loop: the loop runs on while a worker runs ``fn``.

        Most driver calls answer within microseconds, and a round trip through the loop (a future,
        a wake-up of the loop from the worker) costs more than the call. So the loop first waits
        up to QUICK_ANSWER_S on the call's lock, as :meth:`call` does; only a slower call is awaited,
        leaving the loop free for everything else.
        """
        if self._closed:
            raise PoolClosed(f"{self.name} is closed")
        if self._idle <= 0 and self._started < self.workers:
            self._grow()
        # Only with a worker free to take it at once: behind hung workers the wait would be lost,
        # and a burst of such calls would hold the loop 2 ms each (every resource waits then).
        quick = self._idle > 0
        call = _Call(fn, args)
        self._queue.put(call)
        if not (quick and call.done.acquire(timeout=min(QUICK_ANSWER_S, timeout))):
            await self._await_slow(call, timeout)
        if call.error is not None:
            raise call.error
        return call.value

    async def _await_slow(self, call: _Call, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        call.awaited = (loop, future)
        if call.done.acquire(blocking=False):
            return  # it finished before the worker could see ``awaited``: nothing will settle the future
        # A timer that cancels the future, lighter than asyncio.wait_for on every Allocate.
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            future.cancel()

        expiry = loop.call_later(timeout, expire)
        try:
            await future
        except asyncio.CancelledError:
            call.abandoned = True  # the deadline passed, or the RPC ended (its caller went away)
            task = asyncio.current_task()
            if not expired or (task is not None and task.cancelling()):
                raise  # the caller's cancellation wins over a deadline passing in the same moment
            raise CallTimeout(f"no answer within {timeout:g} s") from None
        finally:
            expiry.cancel()

    def _grow(self) -> None:
        with self._lock:
            if self._idle <= 0 and self._started < self.workers:
                self._started += 1
                self._idle += 1  # counted idle until it takes its first call
                threading.Thread(target=self._work, name=f"{self.name}-{self._started}", daemon=True).start()

    def _work(self) -> None:
        while True:
            call = self._queue.get()
            with self._lock:
                self._idle -= 1
            if call is None:
                return
            self._run(call)
            with self._lock:
                self._idle += 1

    def _run(self, call: _Call) -> None:
        if call.abandoned:
            return
        try:
            call.value = call.fn(*call.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            call.error = as_exception(exc)
        finally:
            call.done.release()
            if call.awaited is not None:
                loop, future = call.awaited
                try:
                    loop.call_soon_threadsafe(_settle, future)
                except RuntimeError:  # the loop closed while the driver ran: nobody waits
                    pass

    def close(self) -> None:
        """Stop the workers once they finish what they run (hung ones stay, as daemons)."""
        self._closed = True
        for _ in range(self._started):
            self._queue.put(None)


T = TypeVar("T")


def with_deadline(what: str, timeout: float | None, fn: Callable[[], T], thread_name: str = "driver-hook") -> T:
    """Run ``fn()`` (driver code) in a helper thread; TimeoutError if it takes longer than ``timeout``
    (None: no deadline).

    What ``fn`` raises is raised here as an Exception: a BaseException that is not one
    (``sys.exit()`` in a driver) arrives as DriverAborted. The helper thread runs nothing
    but ``fn``, so that is always the driver's doing; a KeyboardInterrupt of the caller's
    own (Ctrl-C in the main thread, waiting here) still ends the caller.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            error.append(exc)

    thread = threading.Thread(target=run, name=thread_name, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{what} took longer than {timeout:g} s")
    if error:
        raise as_exception(error[0])
    return result[0]
