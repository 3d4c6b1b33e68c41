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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import uuid_utils
from sqlalchemy import Dialect, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from event_store.models import Counter, Event, PublishRequest, utcnow
from event_store.stored import StoredEvent as StoredEvent  # where its many users import it
from event_store.stored import stored_events

NOTIFY_CHANNEL = "listener_events"


@dataclass(frozen=True, slots=True)
class RequestKey:
    """A publish's request id, scoped to its caller, and a digest of what it published.

    Scoped, so two callers' ids never meet; the digest, so that a reused id with other
    events is told apart from a retry (AIP-155). Rows from before scoping have the caller
    "" and no digest: they still answer a retry of any caller, as they did.
    """

    caller: str
    request_id: str
    digest: str


@dataclass(frozen=True, slots=True)
class EarlierRequest:
    """What a request id already published: its digest (None for rows from before digests)
    and its range of sequences."""

    digest: str | None
    first_sequence: int
    count: int


#: The publishes of one group commit: each one's events (type number, serialized body) and
#: its request key, if it has one.
Groups = Sequence[tuple[Sequence[tuple[int, bytes]], RequestKey | None]]
#: The trace context of each publish of a group (None: untraced), or None when none is traced.
Traces = Sequence[str | None] | None


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so the unique index on ``events.id`` grows at its
    right edge like the sequence does. Random uuid4 ids scattered every insert across the
    whole index, which cost SQLite three quarters of its insert rate (BENCHMARKS.md)."""
    return str(uuid_utils.uuid7())


def new_event_ids(count: int) -> list[str]:
    """``count`` ids of :func:`new_event_id`, in the order made (a group commit's events)."""
    uuid7 = uuid_utils.uuid7
    return [str(uuid7()) for _ in range(count)]


COUNTER_VALUE_SQL = "SELECT value FROM counters WHERE name = 'events'"


async def _allocate(connection: AsyncConnection, count: int) -> int:
    """Reserves ``count`` sequences; returns the first. Holds the counter row lock."""
    sql = counter_sql(connection.dialect)
    if connection.dialect.update_returning:  # SQLite and PostgreSQL: one round trip
        last = (await connection.exec_driver_sql(sql, (count,))).scalar_one()
    else:
        await connection.exec_driver_sql(sql, (count,))
        last = (await connection.exec_driver_sql(COUNTER_VALUE_SQL)).scalar_one()
    return int(last) - count + 1


def _marks(dialect: Dialect, count: int) -> list[str]:
    """``count`` positional placeholders in the driver's own parameter style."""
    style = dialect.paramstyle
    if style == "numeric_dollar":
        return [f"${i}" for i in range(1, count + 1)]
    if style == "numeric":
        return [f":{i}" for i in range(1, count + 1)]
    return [{"qmark": "?", "format": "%s"}[style]] * count


@cache
def _insert_sql(dialect: Dialect, traced: bool = False) -> tuple[str, Callable[[Any], Any]]:
    """The events INSERT in the driver's own parameter style, and the publish_time converter;
    ``traced`` adds the traceparent column (untraced groups leave it to its NULL default).

    Publishing inserts thousands of rows a second; going to the driver's executemany with
    plain tuples skips SQLAlchemy's per-row parameter processing, which cost more than the
    insert itself (BENCHMARKS.md, profile of target 2).
    """
    columns = _READ_LIST if traced else COLUMN_LIST
    marks = ", ".join(_marks(dialect, 6 if traced else 5))
    return f"INSERT INTO events ({columns}) VALUES ({marks})", time_converter(dialect)


def time_converter(dialect: Dialect) -> Callable[[Any], Any]:
    # dialect_impl: the decorator over the dialect's own DATETIME (text on SQLite, written
    # as SQLAlchemy writes it everywhere else), not over the generic DateTime.
    column_type = Event.__table__.c.publish_time.type
    process = column_type.dialect_impl(dialect).bind_processor(dialect)
    return process or (lambda value: value)


@cache
def counter_sql(dialect: Dialect) -> str:
    """Bumps the sequence counter by its one parameter; RETURNING the new value where the
    database has it."""
    [mark] = _marks(dialect, 1)
    sql = f"UPDATE counters SET value = value + {mark} WHERE name = 'events'"
    return sql + " RETURNING value" if dialect.update_returning else sql


@cache
def _request_sql(dialect: Dialect) -> str:
    marks = ", ".join(_marks(dialect, 6))
    return (
        "INSERT INTO publish_requests "
        "(caller, request_id, digest, first_sequence, count, create_time) "
        f"VALUES ({marks})"
    )


async def find_requests(
    session: AsyncSession, keys: Sequence[RequestKey]
) -> dict[RequestKey, EarlierRequest]:
    """Which of these keys published before, and what: the caller's own row, else a row
    from before scoping (caller "")."""
    if not keys:
        return {}
    query = select(PublishRequest).where(
        PublishRequest.request_id.in_({k.request_id for k in keys}),
        PublishRequest.caller.in_({k.caller for k in keys} | {""}),
    )
    rows = (await session.execute(query)).scalars()
    return match_requests(
        keys, [(r.caller, r.request_id, r.digest, r.first_sequence, r.count) for r in rows]
    )


#: :func:`find_requests` on PostgreSQL as one statement: the request ids, then the callers.
FIND_REQUESTS_PG = (
    "SELECT caller, request_id, digest, first_sequence, count FROM publish_requests "
    "WHERE request_id = ANY($1::varchar[]) AND caller = ANY($2::varchar[])"
)


def find_requests_params(keys: Sequence[RequestKey]) -> tuple[list[str], list[str]]:
    return list({k.request_id for k in keys}), list({k.caller for k in keys} | {""})


def match_requests(
    keys: Sequence[RequestKey], rows: Sequence[Any]
) -> dict[RequestKey, EarlierRequest]:
    """Each key's earlier request among ``rows`` (caller, request id, digest, first
    sequence, count): the caller's own row, else one from before scoping (caller "")."""
    by_key = {(r[0], r[1]): r for r in rows}
    found: dict[RequestKey, EarlierRequest] = {}
    for key in keys:
        row = by_key.get((key.caller, key.request_id)) or by_key.get(("", key.request_id))
        if row is not None:
            found[key] = EarlierRequest(row[2], row[3], row[4])
    return found


async def find_request(session: AsyncSession, key: RequestKey) -> EarlierRequest | None:
    return (await find_requests(session, [key])).get(key)


async def earlier_events(session: AsyncSession, earlier: EarlierRequest) -> list[StoredEvent]:
    """The events an earlier publish stored (what a retry gets back)."""
    last = earlier.first_sequence + earlier.count - 1
    return await events_between(session, earlier.first_sequence, last)


@dataclass(frozen=True, slots=True)
class AppendPlan:
    """What one group commit writes, once its first sequence is allocated: the statements
    and rows, and the stored events each publish gets back. Shared by the async path and
    the SQLite writer thread (event_store.sqlite_writer)."""

    results: list[list[StoredEvent]]
    event_sql: str
    event_rows: list[tuple[Any, ...]]
    request_sql: str
    request_rows: list[tuple[Any, ...]]


def plan_append(dialect: Dialect, groups: Groups, first: int, traces: Traces = None) -> AppendPlan:
    """``traces``: each publish's trace context, parallel to ``groups`` (None: none traced)."""
    now = utcnow()
    results: list[list[StoredEvent]] = []
    offset = first
    for n, (items, _) in enumerate(groups):
        trace = traces[n] if traces is not None else None
        results.append(
            [
                StoredEvent(offset + i, event_id, etype, now, body, trace)
                for i, (event_id, (etype, body)) in enumerate(
                    zip(new_event_ids(len(items)), items, strict=True)
                )
            ]
        )
        offset += len(items)
    sql, convert_time = _insert_sql(dialect, traces is not None)
    stamp = convert_time(now)  # one publish time for the whole group
    rows: list[tuple[Any, ...]]
    if traces is None:
        rows = [(e.sequence, e.id, e.type, stamp, e.body) for group in results for e in group]
    else:
        rows = [
            (e.sequence, e.id, e.type, stamp, e.body, e.traceparent)
            for group in results
            for e in group
        ]
    requests = [
        (key.caller, key.request_id, key.digest, group[0].sequence, len(group), stamp)
        for (_, key), group in zip(groups, results, strict=True)
        if key is not None
    ]
    return AppendPlan(
        results,
        sql,
        rows,
        _request_sql(dialect),
        requests,
    )


async def append_groups(
    connection: AsyncConnection, groups: Groups, traces: Traces = None
) -> list[list[StoredEvent]]:
    """Appends several publishes (type number and serialized body of each event, and the
    publish's request key or None; each one's trace context in ``traces``) in the caller's
    transaction, which must commit before any publisher is acknowledged. One counter update
    and one multi-row insert for all of them.

    Driver-level SQL throughout, on a plain connection: this runs once per group commit, and
    the ORM's bulk update and unit of work cost more than the statements themselves. The
    servers take this path on SQLite and MariaDB; PostgreSQL appends (and NOTIFYs) in one
    statement, :func:`event_store.pg_append.append_groups_pg`."""
    dialect = connection.dialect
    first = await _allocate(connection, sum(len(items) for items, _ in groups))
    plan = plan_append(dialect, groups, first, traces)
    await connection.exec_driver_sql(plan.event_sql, plan.event_rows)
    if plan.request_rows:
        await connection.exec_driver_sql(plan.request_sql, plan.request_rows)
    return plan.results


_COLUMNS = (Event.sequence, Event.id, Event.type, Event.publish_time, Event.body)
COLUMN_LIST = ", ".join(c.key for c in _COLUMNS)
# What a read returns: the columns a StoredEvent holds, in its order.
_READ_COLUMNS = (*_COLUMNS, Event.traceparent)
_READ_LIST = ", ".join(c.key for c in _READ_COLUMNS)


def _rows(result: Sequence[tuple[int, str, int, datetime, bytes, str | None]]) -> list[StoredEvent]:
    return [StoredEvent(*row) for row in result]


async def events_between(session: AsyncSession, first: int, last: int) -> list[StoredEvent]:
    result = await session.execute(
        select(*_READ_COLUMNS)
        .where(Event.sequence >= first, Event.sequence <= last)
        .order_by(Event.sequence)
    )
    return _rows(result.all())


@cache
def read_sql(dialect: Dialect, type_count: int) -> str:
    """:func:`read_after`'s query for ``type_count`` types (0: all); its parameters are the
    sequence to read after, the types, then the limit."""
    marks = _marks(dialect, type_count + 2)
    where = f"sequence > {marks[0]}"
    if type_count:
        where += f" AND type IN ({', '.join(marks[1:-1])})"
    return f"SELECT {_READ_LIST} FROM events WHERE {where} ORDER BY sequence LIMIT {marks[-1]}"


async def read_after(
    session: AsyncSession, after: int, types: Sequence[int] | None, limit: int
) -> list[StoredEvent]:
    """Events with a sequence above ``after``, of the given types (all when None).

    Every delivery loop runs this for each batch, so it goes to the driver with SQL built
    once per shape: building, caching and processing a SQLAlchemy statement per call cost
    more than the query itself on small batches.
    """
    if types is not None and not types:
        return []
    connection = await session.connection()
    chosen = list(types) if types is not None else []
    sql = read_sql(connection.dialect, len(chosen))
    result = await connection.exec_driver_sql(sql, (after, *chosen, limit))
    return stored_events(result.all())


async def sizes_after(
    session: AsyncSession, after: int, types: Sequence[int] | None, limit: int
) -> list[int]:
    """The body sizes (bytes) of the events :func:`read_after` would return, without
    reading the bodies: a listing sizes its page before it loads anything."""
    if types is not None and not types:
        return []
    query = select(func.length(Event.body)).where(Event.sequence > after)
    if types is not None:
        query = query.where(Event.type.in_(list(types)))
    rows = await session.execute(query.order_by(Event.sequence).limit(limit))
    return [int(n or 0) for n in rows.scalars().all()]


async def max_sequence(session: AsyncSession) -> int:
    """The newest committed sequence (0 for an empty log)."""
    value = (
        await session.execute(select(Counter.value).where(Counter.name == "events"))
    ).scalar_one_or_none()
    # The counter may be ahead of what is visible only inside an open publishing
    # transaction; once read here (committed) it equals the newest committed sequence.
    return int(value or 0)
