"""Which alert server runs which instance: leases with heartbeats and fencing.

Each alert server heartbeats a row in ``alert_servers`` and holds leases on a fair share of
the instances (:func:`fair_share`: their count over the live servers, rounded down or up,
so a server that joins gets its share even when the others hold the rounded-up one). An
instance whose lease
lapsed (its owner died or lost the store) is claimed by another server, and the claim bumps
the fence so the old owner's late writes are refused (``event_store.deliveries``). The same
code runs on every backend; it matters on PostgreSQL and MariaDB, where several alert
servers share one store.

No decision here reads a wall clock against another server's: ``lease_until`` and
``heartbeat_time`` are only *tokens* that change at every renewal (strictly: see
:func:`next_token`). Whether a lease lapsed is decided by the taker watching a token stay
unchanged for a full lease term on its own monotonic clock (``alert_server.lease_clock``),
and a claim names the token it watched, so it fails if the owner renewed in between.

Lock order: every statement here that writes several ``deliveries`` rows first locks them
with ``SELECT … ORDER BY instance_id FOR UPDATE`` (the progress writer writes in the same
order), so two writers never wait on each other in a cycle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from event_store.models import AlertServerRow, Delivery, utcnow


def _deliveries() -> Table:
    return cast(Table, Delivery.__table__)


#: The smallest step between two tokens of one writer (every backend stores microseconds).
TOKEN_STEP = timedelta(milliseconds=1)


def next_token(wanted: datetime, previous: datetime | None) -> datetime:
    """``wanted``, or just after ``previous`` if the wall clock did not move past it (a
    step back, or two writes within its resolution): a renewal must always change the
    token, or a watcher would take it for a missed one."""
    if previous is not None and wanted <= previous:
        return previous + TOKEN_STEP
    return wanted


@dataclass(frozen=True)
class LeaseToken:
    """What a taker watches of a lease it does not hold."""

    owner: str
    fence: int
    lease_until: datetime | None


def fair_share(owned: int, others: Mapping[str, LeaseToken], live: Collection[str]) -> int:
    """How many instances this server should hold (it releases any beyond, claims up to it),
    from the count it holds, the leases it does not hold and the other live servers' ids.

    With ``total`` instances over ``n`` servers each gets ``total // n`` or one more. A server
    holds the larger number while no other live server is below the smaller one; while one
    is (it just joined), everyone holds only the smaller one, so what they release goes to
    the server that is short. Rounding up for everyone instead left a joiner with nothing:
    9 instances held 3, 3, 3 are within ``ceil(9 / 4) = 3`` each."""
    return share_of(owned, Counter(token.owner for token in others.values()), live)


def share_of(owned: int, others: Mapping[str, int], live: Collection[str]) -> int:
    """:func:`fair_share` from counts: ``others`` maps each other owner (``""`` for free
    leases) to how many leases it holds."""
    low, extra = divmod(owned + sum(others.values()), 1 + len(live))
    if extra and all(others.get(server, 0) >= low for server in live):
        return low + 1
    return low


async def heartbeat(session: AsyncSession, server_id: str, address: str) -> None:
    row = await session.get(AlertServerRow, server_id)
    if row is None:
        session.add(AlertServerRow(server_id=server_id, address=address, heartbeat_time=utcnow()))
    else:
        row.heartbeat_time = next_token(utcnow(), row.heartbeat_time)
        row.address = address


async def heartbeats(session: AsyncSession) -> dict[str, datetime]:
    """Every server's heartbeat token, its own included."""
    rows = await session.execute(select(AlertServerRow.server_id, AlertServerRow.heartbeat_time))
    return {server_id: beat for server_id, beat in rows.all()}


async def _lock_owned(session: AsyncSession, server_id: str) -> None:
    """Locks this server's rows in instance order before a multi-row update of them.

    SQLite has no row locks (a writer holds the whole file), so nothing is read there;
    PostgreSQL locks them in a subquery and sends back only their count, not one row per
    instance. MariaDB keeps the plain read: it may drop a derived table's ORDER BY."""
    conn = await session.connection()
    dialect = conn.dialect.name
    if dialect == "sqlite":
        return
    ordered = (
        select(Delivery.instance_id)
        .where(Delivery.owner == server_id)
        .order_by(Delivery.instance_id)
        .with_for_update()
    )
    if dialect == "postgresql":
        await conn.execute(select(func.count()).select_from(ordered.subquery()))
    else:
        await conn.execute(ordered)


async def leave(session: AsyncSession, server_id: str) -> None:
    """A clean shutdown: frees this server's instances for the others at once."""
    await _lock_owned(session, server_id)
    await session.execute(
        update(Delivery)
        .where(Delivery.owner == server_id)
        .values(owner="", lease_until=None, fence=Delivery.fence + 1)
    )
    await session.execute(delete(AlertServerRow).where(AlertServerRow.server_id == server_id))


async def renew(
    session: AsyncSession,
    server_id: str,
    until: datetime,
    known: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Extends this server's leases; returns the instances it still owns and their fences.

    ``known``: what this server holds by its own account (the last renewal's answer, plus
    its claims since, minus its releases), given only while none of its lease transactions
    failed since (a failed commit may have taken a lease it does not know of). Others can
    only take rows from this server, and every change bumps a fence, so the rows it owns
    are a subset of ``known`` with fences at least as high: when their count and fence sum
    equal ``known``'s, they are ``known``, and no row is read. With 10,000 idle instances
    (8b) that is every cycle but the first, and no 10,000 rows a cycle for the collector to
    promote (each promotion brought a full collection nearer: 115-160 ms every 15-25 s)."""
    await _lock_owned(session, server_id)
    conn = await session.connection()
    table = _deliveries()
    mine = table.c.owner == server_id
    await conn.execute(update(table).where(mine).values(lease_until=until))
    if known is not None:
        digest = select(func.count(), func.coalesce(func.sum(table.c.fence), 0)).where(mine)
        count, fences = (await conn.execute(digest)).one()
        if count == len(known) and int(fences) == sum(known.values()):
            return dict(known)
    rows = await conn.execute(select(table.c.instance_id, table.c.fence).where(mine))
    return {iid: int(fence) for iid, fence in rows.all()}


async def others(session: AsyncSession, server_id: str) -> dict[str, LeaseToken]:
    """The leases this server does not hold (free ones have owner ``""``)."""
    rows = await session.execute(
        select(Delivery.instance_id, Delivery.owner, Delivery.fence, Delivery.lease_until).where(
            Delivery.owner != server_id
        )
    )
    return {iid: LeaseToken(owner, int(fence), until) for iid, owner, fence, until in rows.all()}


async def token_of(session: AsyncSession, instance_id: str) -> LeaseToken | None:
    """One instance's lease as a taker watches it; None if it has no delivery row."""
    row = (
        await session.execute(
            select(Delivery.owner, Delivery.fence, Delivery.lease_until).where(
                Delivery.instance_id == instance_id
            )
        )
    ).first()
    return None if row is None else LeaseToken(row[0], int(row[1]), row[2])


async def owner_counts(session: AsyncSession) -> dict[str, int]:
    """How many leases each owner holds (``""``: free ones)."""
    rows = await session.execute(select(Delivery.owner, func.count()).group_by(Delivery.owner))
    return {owner: int(count) for owner, count in rows.all()}


#: Leases claimed per batch (each batch: one locking read, one update of its free leases).
CLAIM_CHUNK = 500


async def claim_many(
    session: AsyncSession,
    watched: Sequence[tuple[str, LeaseToken]],
    server_id: str,
    until: datetime,
) -> dict[str, int]:
    """Takes each lease whose token is still the one watched (free, or lapsed by the
    taker's own observation), in instance order; returns those now held, with their new
    fences. A lease renewed since it was watched is left alone.

    In batches of :data:`CLAIM_CHUNK` in instance order: the batch's rows are locked in
    order first, then its free leases are taken by one statement (each still free with the
    fence watched), and lapsed ones one by one (each names its watched token). ``until`` is
    this claim's new token, so the rows holding it afterwards are exactly those taken."""
    claimed: dict[str, int] = {}
    ordered = sorted(watched, key=lambda w: w[0])
    for start in range(0, len(ordered), CLAIM_CHUNK):
        chunk = ordered[start : start + CLAIM_CHUNK]
        await session.execute(
            select(Delivery.instance_id)
            .where(Delivery.instance_id.in_([iid for iid, _ in chunk]))
            .order_by(Delivery.instance_id)
            .with_for_update()
        )
        free = [(iid, t.fence) for iid, t in chunk if not t.owner and t.lease_until is None]
        claimed.update(await _claim_free(session, free, server_id, until))
        for iid, token in chunk:
            lapsed = token.owner or token.lease_until is not None
            if lapsed and await _claim_lapsed(session, iid, token, server_id, until):
                claimed[iid] = token.fence + 1
    return claimed


async def _claim_free(
    session: AsyncSession, free: list[tuple[str, int]], server_id: str, until: datetime
) -> dict[str, int]:
    """Takes the (locked) leases that are still free with the watched fence, in one
    statement; returns them with their new fences (the rows holding the new token)."""
    if not free:
        return {}
    await session.execute(
        update(Delivery)
        .where(
            tuple_(Delivery.instance_id, Delivery.fence).in_(free),
            Delivery.owner == "",
            Delivery.lease_until.is_(None),
        )
        .values(owner=server_id, lease_until=until, fence=Delivery.fence + 1)
        .execution_options(synchronize_session=False)
    )
    rows = await session.execute(
        select(Delivery.instance_id, Delivery.fence).where(
            Delivery.instance_id.in_([iid for iid, _ in free]),
            Delivery.owner == server_id,
            Delivery.lease_until == until,
        )
    )
    return {iid: int(fence) for iid, fence in rows.all()}


async def _claim_lapsed(
    session: AsyncSession, iid: str, token: LeaseToken, server_id: str, until: datetime
) -> bool:
    """Takes one lease if it still carries the watched token."""
    lease = (
        Delivery.lease_until.is_(None)
        if token.lease_until is None
        else Delivery.lease_until == token.lease_until
    )
    result = await session.execute(
        update(Delivery)
        .where(
            Delivery.instance_id == iid,
            Delivery.owner == token.owner,
            Delivery.fence == token.fence,
            lease,
        )
        .values(owner=server_id, lease_until=until, fence=token.fence + 1)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def release(session: AsyncSession, instance_id: str, server_id: str) -> None:
    await session.execute(
        update(Delivery)
        .where(Delivery.instance_id == instance_id, Delivery.owner == server_id)
        .values(owner="", lease_until=None, fence=Delivery.fence + 1)
    )
