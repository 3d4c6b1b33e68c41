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
from event_store.events import RequestKey, StoredEvent
from event_store.store import Store
from listener_core import errors, stage_trace

log = logging.getLogger(__name__)


def reused(key: RequestKey) -> errors.AlreadyExists:
    return errors.AlreadyExists(
        f"request_id {key.request_id!r} was already used by this caller to publish other "
        "events; a retry must send the same events, a new publish a new request_id",
        reason="REQUEST_ID_REUSED",
        metadata={"request_id": key.request_id},
    )


async def earlier_result(store: Store, key: RequestKey) -> list[StoredEvent] | None:
    """What a repeat of ``key`` gets: the events its first publish stored (None if there was
    none); raises ALREADY_EXISTS when the first publish had other events (AIP-155)."""
    async with store.reader() as session:
        earlier = await events.find_request(session, key)
        if earlier is None:
            return None
        if earlier.digest is not None and earlier.digest != key.digest:
            raise reused(key)
        return await events.earlier_events(session, earlier)


@dataclass(eq=False)
class _Pending:
    items: Sequence[tuple[int, bytes]]
    key: RequestKey | None
    trace: str | None = None  # the publish span's traceparent, when tracing is on
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
        self, items: Sequence[tuple[int, bytes]], key: RequestKey | None, trace: str | None = None
    ) -> list[StoredEvent]:
        """Stores the events (with ``trace``, the publish's trace context); returns once they
        are committed. A repeat of ``key`` gets the first publish's events instead (or
        ALREADY_EXISTS if they differ)."""
        pending = _Pending(items, key, trace)
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
        keys = [p.key for p in group if p.key is not None]
        seen: set[tuple[str, str]] = set()
        if keys:
            earlier = await self.store.find_requests(keys)  # one statement on PostgreSQL
            seen = {(k.caller, k.request_id) for k in earlier}
        fresh: list[_Pending] = []
        repeats: list[_Pending] = []
        for item in group:
            scope = None if item.key is None else (item.key.caller, item.key.request_id)
            if scope is not None and scope in seen:
                repeats.append(item)
            else:
                fresh.append(item)
                if scope is not None:
                    seen.add(scope)  # a second one in this group repeats it
        if fresh:
            try:
                traces = [p.trace for p in fresh]
                results = await self.store.append_groups(
                    [(p.items, p.key) for p in fresh], traces if any(traces) else None
                )
            except sa_exc.IntegrityError:
                if len(fresh) == 1 or not keys:
                    raise
                # Another API server published one of these request ids at the same time:
                # commit each alone, so only that one resolves to the earlier result.
                for item in fresh:
                    await self._commit([item])
            else:
                if stage_trace.enabled():
                    for stored in results:
                        if stored:
                            stage_trace.mark_range(
                                "commit", stored[0].sequence, stored[-1].sequence
                            )
                # The alert servers hear of the commit before the callers do: the Notify is
                # on the way to delivery while the acknowledgements are built and sent.
                self.on_commit(results[-1][-1].sequence)
                for item, result in zip(fresh, results, strict=True):
                    item.resolve(result)
                    self.on_stored(item.items)
        for item in repeats:
            assert item.key is not None
            try:
                found = await earlier_result(self.store, item.key)
            except errors.ServiceError as exc:
                item.resolve(exc)
                continue
            if found is None:  # should not happen: it was seen committed
                await self._commit([_Pending(item.items, None, item.trace, item.future)])
            else:
                item.resolve(found)
