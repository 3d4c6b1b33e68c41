"""Group commit: concurrent publishes share one store transaction.

A durable publish costs one commit (an fsync on SQLite, a WAL flush on PostgreSQL) and
holds the sequence counter's lock until then, so publishes serialise on commits. While one
group commits, the next requests queue; the moment the commit ends, all of them go
together in one transaction, each still acknowledged only after that commit. A lone
publish on an idle server commits at once, with no added wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import exc as sa_exc

from event_store import events
from event_store.events import StoredEvent
from event_store.store import Store

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Pending:
    items: Sequence[tuple[int, bytes]]
    request_id: str
    future: asyncio.Future[list[StoredEvent]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def resolve(self, result: list[StoredEvent] | BaseException) -> None:
        if self.future.done():  # the caller gave up (deadline, cancellation)
            return
        if isinstance(result, BaseException):
            self.future.set_exception(result)
        else:
            self.future.set_result(result)


class GroupCommitter:
    def __init__(
        self,
        store: Store,
        on_commit: Callable[[int], None],
        max_group_events: int = 20_000,
        on_stored: Callable[[Sequence[tuple[int, bytes]]], None] = lambda items: None,
    ) -> None:
        """``on_stored`` sees each newly committed publish's items (not a request_id's
        repeat), for the published-events metric."""
        self.store = store
        self.on_commit = on_commit
        self.on_stored = on_stored
        self.max_group_events = max_group_events
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def publish(
        self, items: Sequence[tuple[int, bytes]], request_id: str
    ) -> list[StoredEvent]:
        """Stores the events; returns once they are committed."""
        pending = _Pending(items, request_id)
        self._pending.append(pending)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="group-commit")
        return await pending.future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                group: list[_Pending] = []
                count = 0
                while self._pending and (
                    not group or count + len(self._pending[0].items) <= self.max_group_events
                ):
                    item = self._pending.pop(0)
                    group.append(item)
                    count += len(item.items)
                try:
                    await self._commit(group)
                except Exception as exc:  # never let the loop die with callers waiting
                    for item in group:
                        item.resolve(exc)

    async def _commit(self, group: list[_Pending]) -> None:
        request_ids = [p.request_id for p in group if p.request_id]
        seen: set[str] = set()
        if request_ids:
            async with self.store.reader() as session:
                seen = await events.find_requests(session, request_ids)
        fresh: list[_Pending] = []
        repeats: list[_Pending] = []
        for item in group:
            if item.request_id and item.request_id in seen:
                repeats.append(item)
            else:
                fresh.append(item)
                if item.request_id:
                    seen.add(item.request_id)  # a second one in this group repeats it
        if fresh:
            try:
                results = await self.store.append_groups([(p.items, p.request_id) for p in fresh])
            except sa_exc.IntegrityError:
                if len(fresh) == 1 or not request_ids:
                    raise
                # Another API server published one of these request ids at the same time:
                # commit each alone, so only that one resolves to the earlier result.
                for item in fresh:
                    await self._commit([item])
            else:
                for item, result in zip(fresh, results, strict=True):
                    item.resolve(result)
                    self.on_stored(item.items)
                self.on_commit(results[-1][-1].sequence)
        for item in repeats:
            async with self.store.reader() as session:
                earlier = await events.find_request(session, item.request_id)
            if earlier is None:  # should not happen: it was seen committed
                await self._commit([_Pending(item.items, "", item.future)])
            else:
                item.resolve(earlier)
