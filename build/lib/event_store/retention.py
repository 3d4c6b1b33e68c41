"""Purges events that every instance has passed, keeping a window for replay.

Runs in batches so a large backlog never holds a long transaction, and never removes a
parked (dead-letter) event, which an operator may still redeliver.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from event_store.models import Counter, Delivery, Event, ParkedEvent, PublishRequest, utcnow
from event_store.store import Store

BATCH = 5_000
PURGED = "purged"  # counters row: the highest sequence purged so far


async def mark_purged(session: AsyncSession, sequence: int) -> None:
    row = await session.get(Counter, PURGED)
    if row is None:
        session.add(Counter(name=PURGED, value=sequence))
    elif row.value < sequence:
        await session.execute(update(Counter).where(Counter.name == PURGED).values(value=sequence))


async def purged_up_to(session: AsyncSession) -> int:
    return int(await session.scalar(select(Counter.value).where(Counter.name == PURGED)) or 0)


async def purge(store: Store, retention_seconds: float, now: datetime | None = None) -> int:
    """Deletes delivered events older than the window; returns how many."""
    cutoff = (now or utcnow()) - timedelta(seconds=retention_seconds)
    total = 0
    while True:
        async with store.transaction() as session:
            floor = await session.scalar(select(func.min(Delivery.delivered_seq)))
            if floor is None:  # no instance: nothing waits for any event
                floor = await session.scalar(select(func.max(Event.sequence))) or 0
            victims = (
                (
                    await session.execute(
                        select(Event.sequence)
                        .where(
                            Event.sequence <= floor,
                            Event.publish_time < cutoff,
                            ~Event.sequence.in_(select(ParkedEvent.sequence)),
                        )
                        .order_by(Event.sequence)
                        .limit(BATCH)
                    )
                )
                .scalars()
                .all()
            )
            if victims:
                await session.execute(delete(Event).where(Event.sequence.in_(victims)))
                await mark_purged(session, max(victims))
            await session.execute(delete(PublishRequest).where(PublishRequest.create_time < cutoff))
        total += len(victims)
        if len(victims) < BATCH:
            return total
