"""Operator actions on an instance's delivery state, and what the API shows of it.

The API server's side of ``deliveries``: each action locks the instance's delivery row, moves
its cursor or marks parked events, and bumps the fence, so that a runner in the middle of a
batch cannot write over the change (its next fenced write gets ``LeaseLost``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from event_store import deliveries, retention
from event_store.errors import EventsPurged, InstanceNotFound, NoPendingEvent
from event_store.models import Delivery, Event, ListenerInstance, ParkedEvent, utcnow


async def _locked(session: AsyncSession, instance_id: str) -> Delivery:
    row = (
        await session.execute(
            select(Delivery).where(Delivery.instance_id == instance_id).with_for_update()
        )
    ).scalar_one_or_none()
    if row is None:
        raise InstanceNotFound(instance_id)
    return row


async def _types(session: AsyncSession, instance_id: str) -> list[int]:
    inst = await session.get(ListenerInstance, instance_id)
    assert inst is not None
    return [int(t) for t in inst.event_types.split(",") if t]


async def head_event(session: AsyncSession, instance_id: str, after: int) -> Event | None:
    types = await _types(session, instance_id)
    query = (
        select(Event)
        .where(Event.sequence > after, Event.type.in_(types))
        .order_by(Event.sequence)
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def bump(session: AsyncSession, instance_id: str) -> None:
    """Makes the runner re-read its state (desired state changed)."""
    row = await _locked(session, instance_id)
    row.fence += 1


async def retry_now(session: AsyncSession, instance_id: str) -> None:
    row = await _locked(session, instance_id)
    row.next_attempt_time = utcnow()
    row.fence += 1


async def skip_head(session: AsyncSession, instance_id: str) -> int:
    """Parks the head event (with its failure) and moves past it; returns its sequence."""
    row = await _locked(session, instance_id)
    head = await head_event(session, instance_id, row.delivered_seq)
    if head is None:
        raise NoPendingEvent(instance_id)
    await deliveries.put_parked(
        session, instance_id, head.sequence, head.id, row.attempts, row.last_error or "skipped"
    )
    row.delivered_seq = head.sequence
    row.attempts, row.last_error, row.next_attempt_time = 0, "", None
    row.fence += 1
    return head.sequence


async def replay(
    session: AsyncSession, instance_id: str, from_sequence: int | None, from_time: datetime | None
) -> int:
    """Moves the cursor back so that events from the given point are delivered again."""
    row = await _locked(session, instance_id)
    if from_time is not None:
        first = await session.scalar(
            select(func.min(Event.sequence)).where(Event.publish_time >= from_time)
        )
        from_sequence = int(first) if first is not None else row.delivered_seq + 1
    assert from_sequence is not None and from_sequence >= 1  # the API checks what it is given
    purged = await retention.purged_up_to(session)
    if from_sequence <= purged and from_sequence <= row.delivered_seq:
        raise EventsPurged(purged)
    row.delivered_seq = min(row.delivered_seq, from_sequence - 1)
    row.attempts, row.last_error, row.next_attempt_time = 0, "", None
    row.fence += 1
    return from_sequence


async def parked_among(
    session: AsyncSession, instance_id: str, sequences: Sequence[int]
) -> set[int]:
    """Which of ``sequences`` are parked for the instance."""
    query = select(ParkedEvent.sequence).where(
        ParkedEvent.instance_id == instance_id, ParkedEvent.sequence.in_(set(sequences))
    )
    return set((await session.execute(query)).scalars().all())


async def mark_redeliver(session: AsyncSession, instance_id: str, sequences: Sequence[int]) -> int:
    row = await _locked(session, instance_id)
    query = update(ParkedEvent).where(ParkedEvent.instance_id == instance_id)
    if sequences:
        query = query.where(ParkedEvent.sequence.in_(sequences))
    result = await session.execute(query.values(redeliver=1))
    row.fence += 1
    return int(result.rowcount)  # type: ignore[attr-defined]


async def list_parked(
    session: AsyncSession, instance_id: str, after: int, limit: int
) -> list[tuple[ParkedEvent, Event | None]]:
    query = (
        select(ParkedEvent, Event)
        .outerjoin(Event, Event.sequence == ParkedEvent.sequence)
        .where(ParkedEvent.instance_id == instance_id, ParkedEvent.sequence > after)
        .order_by(ParkedEvent.sequence)
        .limit(limit)
    )
    return [(p, e) for p, e in (await session.execute(query)).all()]


@dataclass(frozen=True)
class Status:
    delivery: Delivery | None
    pending: int
    oldest_pending: datetime | None
    parked: int


async def status(session: AsyncSession, instance_id: str, types: Sequence[int]) -> Status:
    """What the API shows of an instance's delivery: three indexed queries."""
    delivery = await session.get(Delivery, instance_id)
    after = delivery.delivered_seq if delivery is not None else 0
    pending_q = select(func.count(), func.min(Event.publish_time)).where(
        Event.sequence > after, Event.type.in_(types)
    )
    pending, oldest = (await session.execute(pending_q)).one()
    parked = await session.scalar(
        select(func.count()).select_from(ParkedEvent).where(ParkedEvent.instance_id == instance_id)
    )
    oldest_time = oldest if isinstance(oldest, datetime) else None
    return Status(delivery, int(pending or 0), oldest_time, int(parked or 0))
