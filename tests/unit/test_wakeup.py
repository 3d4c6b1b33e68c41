from __future__ import annotations

import asyncio

from alert_server.wakeup import SequenceSignal


async def _turns(n: int = 5) -> None:
    """Lets the loop run ``n`` times: enough for a woken waiter to finish (it needs two)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_waiters_wake_on_a_newer_sequence_only() -> None:
    signal = SequenceSignal(5)
    known = asyncio.create_task(signal.wait_above(4, timeout=30))
    await asyncio.sleep(0)
    assert known.done()  # already known: returned in its first step, without waiting

    waiter = asyncio.create_task(signal.wait_above(5, timeout=30))
    await _turns()
    signal.bump(5)  # not newer
    await _turns()
    assert not waiter.done()
    signal.bump(6)
    async with asyncio.timeout(30):
        await waiter
    assert signal.latest == 6


async def test_wait_times_out_without_news() -> None:
    signal = SequenceSignal(1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(30):  # a wait that never ended would fail here
        await signal.wait_above(1, timeout=0.2)
    assert loop.time() - started >= 0.2 - 0.01  # it did wait for its timeout
    assert signal.latest == 1


async def test_kick_wakes_waiters_without_news_and_no_waiter_is_kept() -> None:
    signal = SequenceSignal(3)
    waiters = [asyncio.create_task(signal.wait_above(3, timeout=30)) for _ in range(3)]
    await _turns()
    assert not any(w.done() for w in waiters)
    signal.kick()
    async with asyncio.timeout(30):
        await asyncio.gather(*waiters)
    assert signal.latest == 3
    for _ in range(3):  # waits that timed out leave nothing behind (10,000 idle runners)
        await signal.wait_above(3, timeout=0.01)
    cancelled = asyncio.create_task(signal.wait_above(3, timeout=30))
    await _turns()
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert not signal._waiters
