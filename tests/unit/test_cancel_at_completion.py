"""A loop stops when it is cancelled, even in the instant its timed wait completes.

Python 3.11's ``asyncio.wait_for`` returns the inner result and drops a cancellation that
arrives after the inner awaitable finished but before ``wait_for`` resumed (CPython
gh-86296, fixed in 3.12 by rewriting it on ``asyncio.timeout``). A background loop built on
it then runs on after ``cancel()``, and whoever awaits it waits forever: the health reporter's
``close()`` did, so a server's ``stop()`` hung once in the console tests (main thread idle,
the health check's sleep timer pending). The code uses ``asyncio.timeout`` instead (ruff
bans ``asyncio.wait_for``, TID251); these tests force the race deterministically.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from grpc_health.v1 import health

from alert_server.wakeup import SequenceSignal
from listener_core.health import HealthReporter


async def _finish_then_cancel(finish: Callable[[], object], task: asyncio.Task[None]) -> None:
    """Completes what ``task`` waits on, lets that completion land, then cancels ``task``
    before it has run again: the window ``wait_for`` lost cancellations in."""
    finish()
    await asyncio.sleep(0)  # the awaited step finishes; ``task`` is woken but has not run
    task.cancel()


async def test_health_reporter_closes_when_cancelled_as_a_check_completes() -> None:
    entered = asyncio.Event()
    answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def check_store() -> None:
        entered.set()
        await answer

    reporter = HealthReporter(health.aio.HealthServicer(), [], check_store, interval=0.01)
    reporter.start()
    assert reporter._task is not None
    async with asyncio.timeout(30):
        await entered.wait()
    await _finish_then_cancel(lambda: answer.set_result(None), reporter._task)
    done, _ = await asyncio.wait([reporter._task], timeout=10)
    assert done, "the health loop ignored its cancellation and kept checking"
    async with asyncio.timeout(30):
        await reporter.close()


async def test_wait_above_is_cancelled_when_the_sequence_arrives_together() -> None:
    signal = SequenceSignal()
    waiting = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:  # a delivery-style loop: wait for news, then go round again
            rounds += 1
            waiting.set()
            await signal.wait_above(signal.latest, 30)

    task = asyncio.create_task(loop())
    async with asyncio.timeout(30):
        await waiting.wait()
    await _finish_then_cancel(lambda: signal.bump(signal.latest + 1), task)
    done, _ = await asyncio.wait([task], timeout=10)
    assert done and task.cancelled(), f"the loop went round {rounds} times after cancel()"
