"""Delivery state per instance, written by the alert server that runs the instance."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from event_store.models import Delivery, utcnow

MAX_ERROR_CHARS = 2000


async def record_progress(
    session: AsyncSession, instance_id: str, delivered_seq: int, when: datetime | None = None
) -> None:
    """Moves the cursor forward after the plugin returned; clears any failure."""
    now = when or utcnow()
    await session.execute(
        update(Delivery)
        .where(Delivery.instance_id == instance_id, Delivery.delivered_seq <= delivered_seq)
        .values(
            delivered_seq=delivered_seq,
            attempts=0,
            last_error="",
            next_attempt_time=None,
            last_delivery_time=now,
            update_time=now,
        )
    )


async def record_failure(
    session: AsyncSession,
    instance_id: str,
    delivered_seq: int,
    attempts: int,
    error: str,
    next_attempt: datetime | None,
) -> None:
    """Keeps the cursor at the last success and records the head event's failure."""
    now = utcnow()
    values: dict[str, object] = {
        "attempts": attempts,
        "last_error": error[:MAX_ERROR_CHARS],
        "next_attempt_time": next_attempt,
        "update_time": now,
        "delivered_seq": delivered_seq,
    }
    await session.execute(
        update(Delivery).where(Delivery.instance_id == instance_id).values(**values)
    )
