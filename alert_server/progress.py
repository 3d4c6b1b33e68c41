"""Progress writes of every runner of an alert server, batched into one transaction.

Recording each instance's cursor in its own transaction after every batch made runners
wait on the store's write lock (SQLite has one) and made publishers wait on them: with
100 instances a one-row write took up to seconds. Runners hand their newest cursor here
and carry on; one task writes all changed cursors together as soon as the previous write
ended. At least once still holds: a crash redelivers at most the events of one unwritten
cursor. Before any other write of its own (a failure, a park), a runner waits for its
pending progress, so the two never overwrite each other out of order.

Writes are at least ``min_interval`` apart: writing again the moment the last write ended
kept the store's write lock busy while events flowed, and publishers (who need that lock
for every commit) waited on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from event_store import deliveries
from event_store.retry import in_transaction
from event_store.store import Store

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Entry:
    instance_id: str
    owner: str
    fence: int
    sequence: int
    history: list[dict[str, Any]]  # serialized only when written
    on_lost: Callable[[], None]
    filtered: int  # the instance's total of filtered events, written with the cursor
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ProgressWriter:
    def __init__(self, store: Store, retry_delay: float = 0.5, min_interval: float = 0.0) -> None:
        self.store = store
        self.retry_delay = retry_delay
        self.min_interval = min_interval
        self._pending: dict[str, _Entry] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def submit(
        self,
        instance_id: str,
        owner: str,
        fence: int,
        sequence: int,
        history: list[dict[str, Any]],
        on_lost: Callable[[], None],
        filtered: int = 0,
    ) -> asyncio.Future[None]:
        """Queues a cursor; returns a future done once it is written (or refused)."""
        entry = _Entry(instance_id, owner, fence, sequence, history, on_lost, filtered)
        older = self._pending.get(instance_id)
        self._pending[instance_id] = entry
        if older is not None:  # superseded: done when the newer one is
            entry.done.add_done_callback(_settler(older.done))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="progress-writer")
        return entry.done

    async def drain(self, timeout: float = 10.0) -> None:
        """Waits (at most ``timeout``) until every cursor handed in so far is written: a
        clean handover gives the next owner the newest cursors, so it redelivers nothing."""
        if self._pending and self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*(e.done for e in self._pending.values()))

    async def close(self) -> None:
        """Writes what is pending, then stops."""
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending and not await self._flush():
                await asyncio.sleep(self.retry_delay)
                self._wake.set()
            elif self.min_interval > 0:
                await asyncio.sleep(self.min_interval)

    async def _flush(self) -> bool:
        """One write of everything pending. A method of its own, so that no entry (and
        through it a runner and its plugin's code) stays referenced from ``_run``'s frame
        while it waits: an unloaded plugin must be collectable."""
        batch, self._pending = self._pending, {}
        try:
            lost = await self._write(list(batch.values()))
        except Exception as exc:  # the store is down: keep what is newest, retry
            log.warning("writing delivery progress failed: %s; retrying", exc)
            for key, entry in batch.items():
                if key in self._pending:
                    _settle(entry.done)
                else:
                    self._pending[key] = entry
            return False
        for entry in batch.values():
            if entry in lost:
                entry.on_lost()
            _settle(entry.done)
        return True

    async def _write(self, entries: list[_Entry]) -> set[_Entry]:
        rows = [
            (
                e.instance_id,
                e.owner,
                e.fence,
                e.sequence,
                deliveries.history_json(e.history),
                e.filtered,
            )
            for e in entries
        ]
        refused = await in_transaction(
            self.store, lambda session: deliveries.record_progress_many(session, rows)
        )
        return {e for e in entries if e.instance_id in refused}


def _settler(future: asyncio.Future[None]) -> Callable[[asyncio.Future[None]], None]:
    return lambda _done: _settle(future)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
