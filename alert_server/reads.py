"""Reads of the event log shared by every delivery runner of an alert server.

Runners that stand at the same place read the same rows: after a publish, every caught-up
instance wakes and asks for "the events after N". One query answers all of them: a read
already in flight is joined, and the last few non-empty answers are kept for runners that
ask a moment later. With 100 instances that was 99 of every 100 queries (and their row
conversion) saved, which the publish rate with many instances depends on (BENCHMARKS.md).

A kept answer is never wrong: committed events are immutable and committed sequences form a
prefix, so an answer for "after N" is a prefix of any later answer for it. Empty answers are
not kept, so a runner never goes idle on a stale "nothing new"; for the same reason a runner
joins a read in flight only if that read began after the newest sequence the runner knows
of had been announced (a read begun earlier may miss it, and the runner would then wait for
a wake-up that already came).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence

from alert_server.wakeup import SequenceSignal
from event_store.events import StoredEvent
from event_store.store import Store
from listener_core import stage_trace

_Key = tuple[int, tuple[int, ...] | None, int]


class SharedReads:
    def __init__(
        self, store: Store, signal: SequenceSignal, keep: int = 16, keep_bytes: int = 32 << 20
    ) -> None:
        """Keeps at most ``keep`` answers and ``keep_bytes`` of event bodies (events can be
        large: a few big answers must not pin hundreds of megabytes)."""
        self.store = store
        self.signal = signal
        self.keep = keep
        self.keep_bytes = keep_bytes
        self._kept_bytes = 0
        # Each read in flight, with the newest announced sequence when it began.
        self._in_flight: dict[_Key, tuple[asyncio.Future[list[StoredEvent]], int]] = {}
        self._recent: OrderedDict[_Key, tuple[list[StoredEvent], int]] = OrderedDict()

    async def read_after(
        self, after: int, types: Sequence[int] | None, limit: int
    ) -> list[StoredEvent]:
        """The events after ``after`` of ``types`` (all when None), at most ``limit``."""
        key: _Key = (after, tuple(types) if types is not None else None, limit)
        kept = self._recent.get(key)
        if kept is not None:
            return kept[0]
        running = self._in_flight.get(key)
        known = self.signal.latest
        if running is not None and running[1] >= known:
            pending = running[0]
        else:
            pending = asyncio.ensure_future(self._query(key))
            self._in_flight[key] = (pending, known)
        # shield: one runner cancelled (stopped, swapped) must not cancel the others' read.
        return await asyncio.shield(pending)

    async def _query(self, key: _Key) -> list[StoredEvent]:
        after, types, limit = key
        me = asyncio.current_task()
        try:
            found = await self.store.read_after(after, types, limit)
        finally:
            running = self._in_flight.get(key)
            if running is not None and running[0] is me:  # not a newer read of the same key
                del self._in_flight[key]
        if stage_trace.enabled():
            for e in found:
                stage_trace.mark("read", e.sequence)
        size = sum(len(e.body) for e in found)
        if found and size <= self.keep_bytes and key not in self._recent:
            self._recent[key] = (found, size)
            self._kept_bytes += size
            while len(self._recent) > self.keep or self._kept_bytes > self.keep_bytes:
                _, (_, dropped) = self._recent.popitem(last=False)
                self._kept_bytes -= dropped
        return found
