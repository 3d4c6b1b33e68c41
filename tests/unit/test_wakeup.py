from __future__ import annotations

import asyncio
import time

from alert_server.wakeup import SequenceSignal


async def test_waiters_wake_on_a_newer_sequence_only() -> None:
    signal = SequenceSignal(5)
    started = time.monotonic()
    await signal.wait_above(4, timeout=5)  # already known: returns at once
    assert time.monotonic() - started < 0.5

    waiter = asyncio.create_task(signal.wait_above(5, timeout=5))
    await asyncio.sleep(0.05)
    signal.bump(5)  # not newer
    await asyncio.sleep(0.05)
    assert not waiter.done()
    signal.bump(6)
    async with asyncio.timeout(30):
        await waiter
    assert signal.latest == 6


async def test_wait_times_out_without_news() -> None:
    signal = SequenceSignal(1)
    started = time.monotonic()
    await signal.wait_above(1, timeout=0.2)
    assert 0.15 < time.monotonic() - started < 2
