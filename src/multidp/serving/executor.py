"""The thread pool behind every endpoint's gRPC server: it grows on demand and shrinks back.

``concurrent.futures.ThreadPoolExecutor`` never lets a thread go: a burst of calls arriving
at once (thousands of ListAndWatch opens, refused or not) left every thread it started
for the life of the process. Here a thread beyond the first ``keep`` that waits
``idle_s`` for work exits; the first ``keep`` stay, so the kubelet's occasional Allocate
never pays a thread start.

Hand-off as in the standard executor: each idle thread holds one token; ``submit``
takes a token when there is one (an idle thread will pick the work up), else starts a
thread. A thread that times out takes a token before it leaves, so no submitted work
ever waits on a thread that is gone.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class ElasticExecutor(Executor):
    """Up to ``max_workers`` threads; those beyond ``keep`` exit after ``idle_s`` without work."""

    def __init__(self, max_workers: int, keep: int, idle_s: float, name: str) -> None:
        self.max_workers = max_workers
        self.keep = keep
        self.idle_s = idle_s
        self.name = name
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads = 0
        self._started = 0
        self._shutdown = False

    @property
    def threads(self) -> int:
        return self._threads

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._shutdown:
            raise RuntimeError(f"{self.name}: cannot schedule new work after shutdown")
        future: Future[Any] = Future()
        self._work.put((future, fn, args, kwargs))
        if not self._idle.acquire(blocking=False):
            self._grow()
        return future

    def _grow(self) -> None:
        with self._lock:
            if self._threads >= self.max_workers:
                return  # queued: a busy thread takes it when it is done
            self._threads += 1
            self._started += 1
            number = self._started
        threading.Thread(target=self._run, name=f"{self.name}_{number}", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                work = self._work.get(timeout=None if self._threads <= self.keep else self.idle_s)
            except queue.Empty:
                if self._leave():
                    return
                continue
            if work is None:
                with self._lock:
                    self._threads -= 1
                return
            future, fn, args, kwargs = work
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                    future.set_exception(exc)
                del future, fn, args, kwargs, work  # drop references before waiting again
            self._idle.release()

    def _leave(self) -> bool:
        """After ``idle_s`` without work: leave, unless a submit counts on this thread's token."""
        with self._lock:
            if self._threads <= self.keep or not self._idle.acquire(blocking=False):
                return False  # kept, or a submit took the token: its work is in the queue
            self._threads -= 1
            return True

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work and ask every thread to end once idle. Never waits, whatever ``wait`` says:
        a gRPC handler stuck in a driver must not hold the host's stop."""
        self._shutdown = True
        if cancel_futures:
            while True:
                try:
                    work = self._work.get_nowait()
                except queue.Empty:
                    break
                if work is not None:
                    work[0].cancel()
        with self._lock:
            count = self._threads
        for _ in range(count):
            self._work.put(None)
