"""multidp.serving.executor: the gRPC servers' pool grows on demand and shrinks back to what it keeps."""

from __future__ import annotations

import threading

import pytest

from multidp.serving.executor import ElasticExecutor
from multidp.testing import wait_until


def test_a_burst_grows_the_pool_and_idle_threads_leave_down_to_the_kept_ones():
    pool = ElasticExecutor(max_workers=64, keep=2, idle_s=0.2, name="t")
    release = threading.Event()
    futures = [pool.submit(release.wait, 10) for _ in range(40)]
    wait_until(lambda: pool.threads == 40, what="one thread per blocked call")
    release.set()
    assert all(f.result(timeout=10) for f in futures)
    wait_until(lambda: pool.threads == 2, timeout=10, what="the pool back to the kept threads")
    assert pool.submit(lambda: 7).result(timeout=5) == 7  # the kept ones still work
    assert pool.threads == 2
    pool.shutdown()


def test_no_work_is_lost_while_threads_come_and_go():
    # Submits race with threads timing out: every call must still run exactly once.
    pool = ElasticExecutor(max_workers=8, keep=1, idle_s=0.001, name="t")
    done: list[int] = []
    lock = threading.Lock()

    def record(n: int) -> int:
        with lock:
            done.append(n)
        return n

    def submitter(base: int) -> list[int]:
        return [pool.submit(record, base + i).result(timeout=10) for i in range(500)]

    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda b=b: results.append(submitter(b))) for b in range(0, 4000, 1000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(done) == sorted(n for b in range(0, 4000, 1000) for n in range(b, b + 500))
    assert pool.threads <= 8
    pool.shutdown()


def test_at_the_limit_work_waits_for_a_thread_instead_of_starting_one():
    pool = ElasticExecutor(max_workers=2, keep=0, idle_s=5, name="t")
    release = threading.Event()
    blocked = [pool.submit(release.wait, 10) for _ in range(2)]
    queued = pool.submit(lambda: "ran")
    assert pool.threads == 2 and not queued.done()
    release.set()
    assert queued.result(timeout=10) == "ran" and all(f.result(timeout=10) for f in blocked)
    pool.shutdown()


def test_exceptions_reach_the_future_and_the_thread_carries_on():
    pool = ElasticExecutor(max_workers=1, keep=1, idle_s=5, name="t")

    def boom() -> None:
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        pool.submit(boom).result(timeout=5)
    assert pool.submit(lambda: 1).result(timeout=5) == 1
    pool.shutdown()


def test_shutdown_stops_the_threads_and_refuses_new_work():
    pool = ElasticExecutor(max_workers=4, keep=4, idle_s=5, name="t")
    assert [pool.submit(int, n).result(timeout=5) for n in range(3)] == [0, 1, 2]
    pool.shutdown()
    wait_until(lambda: pool.threads == 0, what="threads stopped")
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: 0)
