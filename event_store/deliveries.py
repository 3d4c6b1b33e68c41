"""Delivery state per instance: the cursor, failures, the dead-letter list, fencing.

Every write by a runner names the owner and fence it started with and touches nothing if
either moved: a takeover by another alert server and every operator change of the cursor
(skip, replay, redeliver, pause) bump the fence, so a stale runner can never record
progress over them. It learns so from ``LeaseLost`` and re-reads its state.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, Update, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from event_store.models import Delivery, ParkedEvent, utcnow

MAX_ERROR_CHARS = 2000
KEEP_ATTEMPTS = 10


class LeaseLost(Exception):
    """The runner's owner or fence is no longer current: it must re-read or stop."""


@dataclass(frozen=True)
class Attempt:
    time: str
    duration_ms: float
    sequence: int
    event_id: str
    count: int
    error: str = ""


def push_attempt(history: list[dict[str, Any]], attempt: Attempt) -> list[dict[str, Any]]:
    """Prepends an attempt to an instance's history (capped); returns a snapshot of it, to
    serialize with :func:`history_json` when it is written (often never: superseded)."""
    history.insert(0, asdict(attempt))
    del history[KEEP_ATTEMPTS:]
    return list(history)


def history_json(history: list[dict[str, Any]]) -> str:
    return json.dumps(history)


def _fenced(instance_id: str, owner: str, fence: int) -> Any:
    return (
        (Delivery.instance_id == instance_id)
        & (Delivery.owner == owner)
        & (Delivery.fence == fence)
    )


async def _update(session: AsyncSession, where: Any, values: dict[str, Any]) -> None:
    result = await session.execute(update(Delivery).where(where).values(**values))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost()


async def record_progress(
    session: AsyncSession,
    instance_id: str,
    owner: str,
    fence: int,
    delivered_seq: int,
    attempts_json: str,
) -> None:
    """Moves the cursor forward after the plugin returned; clears any failure."""
    now = utcnow()
    await _update(
        session,
        _fenced(instance_id, owner, fence),
        {
            "delivered_seq": delivered_seq,
            "attempts": 0,
            "last_error": "",
            "next_attempt_time": None,
            "last_delivery_time": now,
            "update_time": now,
            "recent_attempts": attempts_json,
        },
    )


@cache
def _progress_statement() -> Update:
    """Built once: a statement built per write (with the time as a literal) cost SQLAlchemy
    a cache key walk on every write, a third of its CPU (BENCHMARKS.md)."""
    table = cast(Table, Delivery.__table__)
    now = bindparam("b_now", type_=table.c.update_time.type)
    return (
        update(table)
        .where(
            table.c.instance_id == bindparam("b_id"),
            table.c.owner == bindparam("b_owner"),
            table.c.fence == bindparam("b_fence"),
            table.c.delivered_seq <= bindparam("b_seq"),
        )
        .values(
            delivered_seq=bindparam("b_seq"),
            attempts=0,
            last_error="",
            next_attempt_time=None,
            last_delivery_time=now,
            update_time=now,
            recent_attempts=bindparam("b_hist"),
            filtered_count=func.coalesce(bindparam("b_filt"), table.c.filtered_count),
        )
    )


async def record_progress_many(
    session: AsyncSession,
    entries: Sequence[tuple[str, str, int, int, str] | tuple[str, str, int, int, str, int]],
) -> set[str]:
    """Moves many cursors in one statement (instance, owner, fence, sequence, attempts JSON,
    and optionally the instance's total of filtered events, kept as is when left out);
    returns the instances whose write was refused (owner or fence moved).

    One executemany keeps the store's write lock for one driver call, however many
    instances an alert server runs."""
    table = cast(Table, Delivery.__table__)
    now = utcnow()
    # In instance order, as every multi-row writer of deliveries locks (event_store.leases):
    # two writers taking the same rows in different orders deadlock.
    params = [
        {
            "b_id": e[0],
            "b_owner": e[1],
            "b_fence": e[2],
            "b_seq": e[3],
            "b_hist": e[4],
            "b_filt": e[5] if len(e) > 5 else None,
            "b_now": now,
        }
        for e in sorted(entries, key=lambda e: e[0])
    ]
    conn = await session.connection()
    written = await conn.execute(_progress_statement(), params)
    if written.rowcount == len(params):
        return set()
    rows = await conn.execute(
        select(table.c.instance_id, table.c.owner, table.c.fence).where(
            table.c.instance_id.in_([e[0] for e in entries])
        )
    )
    current = {iid: (owner, int(fence)) for iid, owner, fence in rows.all()}
    return {e[0] for e in entries if current.get(e[0]) != (e[1], e[2])}


async def record_failure(
    session: AsyncSession,
    instance_id: str,
    owner: str,
    fence: int,
    delivered_seq: int,
    attempts: int,
    error: str,
    next_attempt: datetime | None,
    attempts_json: str,
) -> None:
    """Keeps the cursor at the last success and records the head event's failure."""
    await _update(
        session,
        _fenced(instance_id, owner, fence),
        {
            "delivered_seq": delivered_seq,
            "attempts": attempts,
            "last_error": error[:MAX_ERROR_CHARS],
            "next_attempt_time": next_attempt,
            "update_time": utcnow(),
            "recent_attempts": attempts_json,
        },
    )


async def park(
    session: AsyncSession,
    instance_id: str,
    owner: str,
    fence: int,
    sequence: int,
    event_id: str,
    attempts: int,
    error: str,
    attempts_json: str,
) -> None:
    """Moves the failed head event to the dead-letter list and the cursor past it."""
    await record_progress(session, instance_id, owner, fence, sequence, attempts_json)
    await put_parked(session, instance_id, sequence, event_id, attempts, error)


async def put_parked(
    session: AsyncSession, instance_id: str, sequence: int, event_id: str, attempts: int, error: str
) -> None:
    existing = await session.get(ParkedEvent, (instance_id, sequence))
    if existing is not None:
        existing.attempts, existing.last_error = attempts, error[:MAX_ERROR_CHARS]
        existing.redeliver, existing.park_time = 0, utcnow()
        return
    session.add(
        ParkedEvent(
            instance_id=instance_id,
            sequence=sequence,
            event_id=event_id,
            attempts=attempts,
            last_error=error[:MAX_ERROR_CHARS],
            park_time=utcnow(),
            redeliver=0,
        )
    )


async def finish_redelivery(
    session: AsyncSession, instance_id: str, sequence: int, error: str
) -> None:
    """After an operator's redelivery: gone from the list on success, else kept with the error."""
    row = await session.get(ParkedEvent, (instance_id, sequence))
    if row is None:
        return
    if not error:
        await session.delete(row)
    else:
        row.attempts += 1
        row.last_error = error[:MAX_ERROR_CHARS]
        row.redeliver = 0


async def redeliveries(session: AsyncSession, instance_id: str) -> list[int]:
    query = (
        select(ParkedEvent.sequence)
        .where(ParkedEvent.instance_id == instance_id, ParkedEvent.redeliver == 1)
        .order_by(ParkedEvent.sequence)
    )
    return list((await session.execute(query)).scalars().all())


async def deliveries_by_id(
    session: AsyncSession, instance_ids: Sequence[str]
) -> dict[str, Delivery]:
    query = select(Delivery).where(Delivery.instance_id.in_(instance_ids))
    return {d.instance_id: d for d in (await session.execute(query)).scalars()}


async def redeliveries_of(
    session: AsyncSession, instance_ids: Sequence[str]
) -> dict[str, list[int]]:
    """:func:`redeliveries` of many instances in one query (those with none are absent)."""
    query = (
        select(ParkedEvent.instance_id, ParkedEvent.sequence)
        .where(ParkedEvent.instance_id.in_(instance_ids), ParkedEvent.redeliver == 1)
        .order_by(ParkedEvent.instance_id, ParkedEvent.sequence)
    )
    found: dict[str, list[int]] = {}
    for instance_id, sequence in await session.execute(query):
        found.setdefault(instance_id, []).append(sequence)
    return found


async def note_start_failure(
    session: AsyncSession, instance_id: str, owner: str, error: str
) -> None:
    """The instance could not even start here (its plugin does not load, its params do not
    decrypt): say so in its status, since no runner exists to record anything."""
    await session.execute(
        update(Delivery)
        .where(Delivery.instance_id == instance_id, Delivery.owner == owner)
        .values(last_error=error[:MAX_ERROR_CHARS], attempts=Delivery.attempts + 1)
    )


#: How a start failure's error begins (``alert_server.host``): the one error a successful
#: start clears, since no event was involved.
START_FAILURE = "cannot start: "


async def clear_start_failure(session: AsyncSession, instance_id: str, owner: str) -> bool:
    """The instance started after all (its key is back, its plugin loads): its status stops
    showing the start failure at once, instead of at its next delivered event."""
    result = await session.execute(
        update(Delivery)
        .where(
            Delivery.instance_id == instance_id,
            Delivery.owner == owner,
            Delivery.last_error.startswith(START_FAILURE),
        )
        .values(last_error="", attempts=0, next_attempt_time=None)
    )
    return bool(getattr(result, "rowcount", 0))
