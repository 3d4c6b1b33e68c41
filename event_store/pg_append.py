"""The PostgreSQL append: a whole group commit as one statement, so one round trip.

Why it exists beside :func:`event_store.events.append_groups`: each statement of the
transactional path is a round trip during which PostgreSQL holds the ``counters`` row lock
waiting for us (BENCHMARKS.md, 2p). Here the counter bump, every event and request row and
the NOTIFY are one statement on an autocommit connection, so the same row lock orders commits
(the prefix rule in :mod:`event_store.events` holds) but is held for one statement only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any

from sqlalchemy.dialects import postgresql

from event_store.events import (
    COLUMN_LIST,
    NOTIFY_CHANNEL,
    Groups,
    StoredEvent,
    Traces,
    new_event_ids,
    time_converter,
)
from event_store.models import utcnow


@cache
def _pg_append_sql(traced: bool) -> str:
    """The whole PostgreSQL append as one statement: the counter bump (its row lock held to
    the commit, as in :func:`append_groups`), every event and request row from arrays, and
    the NOTIFY. Sequences are the counter's new range in array order.

    The ids and the types go as one comma-separated text each, not as arrays: asyncpg encodes
    an array element by element with a type check on each (0.35 us an id, 0.23 a type),
    a text at once (both 0.05 us an event, the join included)."""
    tp_column, tp_value, tp_array, tp_name = (
        (", traceparent", ", u.tp", ", $11::varchar[]", ", tp") if traced else ("", "", "", "")
    )
    return (
        "WITH c AS (UPDATE counters SET value = value + $1::bigint WHERE name = 'events' "
        "RETURNING value - $1::bigint AS base), "
        f"e AS (INSERT INTO events ({COLUMN_LIST}{tp_column}) "
        f"SELECT c.base + u.n, u.id, u.type, $2::timestamp, u.body{tp_value} FROM c, "
        "unnest(string_to_array($3::text, ','), string_to_array($4::text, ',')::smallint[], "
        f"$5::bytea[]{tp_array}) WITH ORDINALITY AS u(id, type, body{tp_name}, n)), "
        "r AS (INSERT INTO publish_requests "
        "(caller, request_id, digest, first_sequence, count, create_time) "
        "SELECT u.caller, u.request_id, u.digest, c.base + u.first, u.count, $2::timestamp "
        "FROM c, unnest($6::varchar[], $7::varchar[], $8::varchar[], $9::bigint[], "
        "$10::int[]) AS u(caller, request_id, digest, first, count)) "
        f"SELECT c.base, pg_notify('{NOTIFY_CHANNEL}', (c.base + $1::bigint)::text) FROM c"
    )


#: Runs one statement with positional parameters and returns its first row.
Execute = Callable[[str, tuple[Any, ...]], Awaitable[Any]]

_STAMP = time_converter(postgresql.asyncpg.dialect())  # type: ignore[no-untyped-call]


async def append_groups_pg(
    execute: Execute, groups: Groups, traces: Traces = None
) -> list[list[StoredEvent]]:
    """As :func:`append_groups`, on PostgreSQL in one round trip: ``execute`` must run the
    statement in autocommit, so it is its own transaction and returns only after PostgreSQL
    has committed it (:class:`event_store.pg_connection.KeptConnection`). Each statement of
    the transactional path was a round trip during which PostgreSQL held the counter lock
    waiting for us (BENCHMARKS.md, 2p)."""
    now = utcnow()
    stamp = _STAMP(now)
    ids: list[str] = []
    types: list[int] = []
    bodies: list[bytes] = []
    callers: list[str] = []
    request_ids: list[str] = []
    digests: list[str] = []
    firsts: list[int] = []
    counts: list[int] = []
    tps: list[str | None] = []
    group_ids: list[list[str]] = []
    offset = 0
    for n, (items, key) in enumerate(groups):
        if key is not None:
            callers.append(key.caller)
            request_ids.append(key.request_id)
            digests.append(key.digest)
            firsts.append(offset + 1)
            counts.append(len(items))
        # A comprehension per column, not one loop appending to each: half the cost an event.
        group_ids.append(new_event_ids(len(items)))
        ids += group_ids[-1]
        types += [etype for etype, _ in items]
        bodies += [body for _, body in items]
        if traces is not None:
            tps += [traces[n]] * len(items)
        offset += len(items)
    traced = traces is not None
    params: tuple[Any, ...] = (offset, stamp, ",".join(ids), ",".join(map(str, types)), bodies)
    params += (callers, request_ids, digests, firsts, counts) + ((tps,) if traced else ())
    row = await execute(_pg_append_sql(traced), params)
    first = int(row[0]) + 1
    results: list[list[StoredEvent]] = []
    for n, ((items, _), these) in enumerate(zip(groups, group_ids, strict=True)):
        trace = traces[n] if traces is not None else None
        results.append(
            [
                StoredEvent(first + i, event_id, etype, now, body, trace)
                for i, (event_id, (etype, body)) in enumerate(zip(these, items, strict=True))
            ]
        )
        first += len(items)
    return results
