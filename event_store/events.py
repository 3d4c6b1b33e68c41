"""The event log: append once per event, read per instance by sequence.

Why no event is ever skipped: a reader asks for ``sequence > cursor``. With sequences from
an auto-increment or a database sequence, two publishers can commit out of order (sequence
11 visible before 10), and a reader that already moved past 11 would never see 10. Here
every publishing transaction first increments the single ``counters`` row and allocates its
range from it; that row lock is held until the transaction commits, so publishers commit
strictly in sequence order and the committed sequences always form a prefix. The cost is
one short serialised section per publish *transaction* (not per event or per subscriber),
which batching (PublishEvents, and grouped single publishes) amortises.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from event_store.models import Counter, Event, PublishRequest, utcnow

NOTIFY_CHANNEL = "listener_events"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    sequence: int
    id: str
    type: int
    publish_time: datetime
    body: bytes


async def _allocate(session: AsyncSession, count: int) -> int:
    """Reserves ``count`` sequences; returns the first. Holds the counter row lock."""
    await session.execute(
        update(Counter).where(Counter.name == "events").values(value=Counter.value + count)
    )
    last = (
        await session.execute(select(Counter.value).where(Counter.name == "events"))
    ).scalar_one()
    return int(last) - count + 1


async def find_request(session: AsyncSession, request_id: str) -> list[StoredEvent] | None:
    req = await session.get(PublishRequest, request_id)
    if req is None:
        return None
    return await events_between(session, req.first_sequence, req.first_sequence + req.count - 1)


async def find_requests(session: AsyncSession, request_ids: Sequence[str]) -> set[str]:
    """Which of these request ids were published before."""
    if not request_ids:
        return set()
    query = select(PublishRequest.request_id).where(PublishRequest.request_id.in_(request_ids))
    return set((await session.execute(query)).scalars().all())


async def append(
    session: AsyncSession, items: Sequence[tuple[int, bytes]], request_id: str = ""
) -> list[StoredEvent]:
    """Appends events (type number, serialized body) in order, inside the caller's
    transaction. The caller must commit before acknowledging the publisher."""
    [stored] = await append_groups(session, [(items, request_id)])
    return stored


async def append_groups(
    session: AsyncSession, groups: Sequence[tuple[Sequence[tuple[int, bytes]], str]]
) -> list[list[StoredEvent]]:
    """Appends several publishes in one transaction (group commit): one counter update and
    one multi-row insert for all of them; each keeps its own request_id."""
    total = sum(len(items) for items, _ in groups)
    first = await _allocate(session, total)
    now = utcnow()
    results: list[list[StoredEvent]] = []
    offset = first
    for items, _ in groups:
        results.append(
            [
                StoredEvent(offset + i, str(uuid.uuid4()), etype, now, body)
                for i, (etype, body) in enumerate(items)
            ]
        )
        offset += len(items)
    stored = [event for group in results for event in group]
    await session.execute(
        insert(Event),
        [
            {
                "sequence": e.sequence,
                "id": e.id,
                "type": e.type,
                "publish_time": e.publish_time,
                "body": e.body,
            }
            for e in stored
        ],
    )
    requests = [
        PublishRequest(request_id=rid, first_sequence=group[0].sequence, count=len(group))
        for (_, rid), group in zip(groups, results, strict=True)
        if rid
    ]
    if requests:
        session.add_all(requests)
        await session.flush()
    if session.get_bind().dialect.name == "postgresql":
        # Delivered by PostgreSQL at commit, to every alert server LISTENing (a second
        # wake-up path next to the API server's Notify call).
        await session.execute(
            text("SELECT pg_notify(:channel, :seq)"),
            {"channel": NOTIFY_CHANNEL, "seq": str(stored[-1].sequence)},
        )
    return results


_COLUMNS = (Event.sequence, Event.id, Event.type, Event.publish_time, Event.body)


def _rows(result: Sequence[tuple[int, str, int, datetime, bytes]]) -> list[StoredEvent]:
    return [StoredEvent(*row) for row in result]


async def events_between(session: AsyncSession, first: int, last: int) -> list[StoredEvent]:
    result = await session.execute(
        select(*_COLUMNS)
        .where(Event.sequence >= first, Event.sequence <= last)
        .order_by(Event.sequence)
    )
    return _rows(result.all())


async def read_after(
    session: AsyncSession, after: int, types: Sequence[int] | None, limit: int
) -> list[StoredEvent]:
    """Events with a sequence above ``after``, of the given types (all when None)."""
    query = select(*_COLUMNS).where(Event.sequence > after)
    if types is not None:
        query = query.where(Event.type.in_(types))
    result = await session.execute(query.order_by(Event.sequence).limit(limit))
    return _rows(result.all())


async def max_sequence(session: AsyncSession) -> int:
    """The newest committed sequence (0 for an empty log)."""
    value = (
        await session.execute(select(Counter.value).where(Counter.name == "events"))
    ).scalar_one_or_none()
    # The counter may be ahead of what is visible only inside an open publishing
    # transaction; once read here (committed) it equals the newest committed sequence.
    return int(value or 0)
