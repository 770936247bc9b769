"""multidp.plugins.calls: the CallPool that runs driver calls with a timeout."""

from __future__ import annotations

import pytest


def test_call_pool_grows_only_when_busy_and_drops_abandoned_calls():
    import threading
    import time

    from multidp.plugins.calls import CallPool, CallTimeout, PoolClosed

    pool = CallPool("t", 3)
    assert pool.call(lambda x: x * 2, 21, timeout=5) == 42
    assert pool.call(lambda: 1, timeout=5) == 1
    assert pool._started == 1  # one worker was enough for calls one after another
    release = threading.Event()
    ran: list[int] = []
    with pytest.raises(CallTimeout):
        pool.call(release.wait, timeout=0.05)  # the first worker hangs
    assert pool.call(lambda: "still answering", timeout=5) == "still answering"
    assert pool._started == 2
    with pytest.raises(CallTimeout):
        pool.call(release.wait, timeout=0.05)
    with pytest.raises(CallTimeout):
        pool.call(release.wait, timeout=0.05)  # three hung: the pool is full
    with pytest.raises(CallTimeout):
        pool.call(ran.append, 1, timeout=0.05)  # queued behind them, then given up on
    release.set()
    time.sleep(0.2)
    assert ran == []  # the abandoned call was dropped, not run late
    with pytest.raises(ZeroDivisionError):
        pool.call(lambda: 1 / 0, timeout=5)
    pool.close()
    with pytest.raises(PoolClosed):
        pool.call(lambda: 1, timeout=5)


def test_call_async_answers_times_out_and_lets_the_loop_run_meanwhile():
    import asyncio
    import threading

    from multidp.plugins.calls import CallPool, CallTimeout

    pool = CallPool("a", 2)
    release = threading.Event()

    def fails() -> None:
        raise ValueError("driver says no")

    async def scenario() -> list[str]:
        seen = []
        assert await pool.call_async(lambda x: x + 1, 41, timeout=5) == 42
        with pytest.raises(ValueError, match="driver says no"):
            await pool.call_async(fails, timeout=5)
        # A hung call times out; the loop keeps running other work while it waits.
        ticker = asyncio.get_running_loop().call_later(0.01, seen.append, "loop ran")
        with pytest.raises(CallTimeout):
            await pool.call_async(release.wait, timeout=0.2)
        ticker.cancel()
        # The caller going away (its RPC cancelled) is a cancellation, not a timeout, and the
        # call queued behind the hung one is dropped, not run late.
        ran: list[int] = []
        blocker = asyncio.ensure_future(pool.call_async(release.wait, timeout=5))  # the second worker hangs too
        task = asyncio.ensure_future(pool.call_async(ran.append, 1, timeout=5))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await blocker
        assert await pool.call_async(lambda: "after", timeout=5) == "after"
        assert ran == []
        return seen

    assert asyncio.run(scenario()) == ["loop ran"]
    pool.close()
