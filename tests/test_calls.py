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
