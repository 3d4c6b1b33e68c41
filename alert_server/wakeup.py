"""The newest committed sequence, broadcast to every delivery loop.

Loops wait here instead of polling the store: a wake-up arrives from the API server's
Notify call (or a publish in this process), and one slow poll of the counter stands in when
a wake-up is lost. Idle instances cost one awaiting coroutine each and no queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from event_store import events
from event_store.store import Store

log = logging.getLogger(__name__)


class SequenceSignal:
    def __init__(self, latest: int = 0) -> None:
        self.latest = latest
        self._changed = asyncio.Event()

    def bump(self, sequence: int) -> None:
        if sequence > self.latest:
            self.latest = sequence
            self._changed.set()
            self._changed = asyncio.Event()

    def kick(self) -> None:
        """Wakes every waiter without news, e.g. after an operator's retry."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_above(self, sequence: int, timeout: float) -> None:
        """Returns when a sequence above ``sequence`` is known, or after ``timeout``."""
        if self.latest > sequence:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)


async def poll_forever(signal: SequenceSignal, store: Store, interval: float) -> None:
    """The fallback: reads the counter every ``interval`` seconds."""
    while True:
        try:
            async with store.reader() as session:
                signal.bump(await events.max_sequence(session))
        except Exception as exc:  # the store may be briefly down; keep polling
            log.warning("polling the event counter failed: %s", exc)
        await asyncio.sleep(interval)
