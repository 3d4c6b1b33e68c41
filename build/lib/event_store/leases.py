"""Which alert server runs which instance: leases with heartbeats and fencing.

Each alert server heartbeats a row in ``alert_servers`` and holds leases on a fair share of
the instances (their count over the live servers, rounded up). An instance whose lease
lapsed (its owner died) is claimed by another server, and the claim bumps the fence so the
old owner's late writes are refused (``event_store.deliveries``). The same code runs on
every backend; it matters on PostgreSQL, where several alert servers share one store.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from event_store.models import AlertServerRow, Delivery, utcnow


async def heartbeat(session: AsyncSession, server_id: str, address: str) -> None:
    row = await session.get(AlertServerRow, server_id)
    if row is None:
        session.add(AlertServerRow(server_id=server_id, address=address, heartbeat_time=utcnow()))
    else:
        row.heartbeat_time = utcnow()


async def leave(session: AsyncSession, server_id: str) -> None:
    """A clean shutdown: frees this server's instances for the others at once."""
    await session.execute(
        update(Delivery)
        .where(Delivery.owner == server_id)
        .values(owner="", lease_until=None, fence=Delivery.fence + 1)
    )
    await session.execute(delete(AlertServerRow).where(AlertServerRow.server_id == server_id))


async def live_servers(session: AsyncSession, ttl: float) -> int:
    since = utcnow() - timedelta(seconds=ttl)
    count = await session.scalar(
        select(func.count())
        .select_from(AlertServerRow)
        .where(AlertServerRow.heartbeat_time >= since)
    )
    return max(1, int(count or 0))


async def renew(session: AsyncSession, server_id: str, until: datetime) -> dict[str, int]:
    """Extends this server's leases; returns the instances it still owns and their fences."""
    await session.execute(
        update(Delivery).where(Delivery.owner == server_id).values(lease_until=until)
    )
    rows = await session.execute(
        select(Delivery.instance_id, Delivery.fence).where(Delivery.owner == server_id)
    )
    return {iid: int(fence) for iid, fence in rows.all()}


async def total_instances(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Delivery)) or 0)


async def claimable(session: AsyncSession, limit: int) -> list[str]:
    now = utcnow()
    rows = await session.execute(
        select(Delivery.instance_id)
        .where(or_(Delivery.owner == "", Delivery.lease_until < now))
        .order_by(Delivery.instance_id)
        .limit(limit)
    )
    return list(rows.scalars().all())


async def claim_many(
    session: AsyncSession, instance_ids: list[str], server_id: str, until: datetime
) -> dict[str, int]:
    """Takes every free or lapsed lease among ``instance_ids`` in one statement; returns
    the ones now held with their new fences (a start with 1,000 instances stays fast)."""
    if not instance_ids:
        return {}
    now = utcnow()
    await session.execute(
        update(Delivery)
        .where(
            Delivery.instance_id.in_(instance_ids),
            or_(Delivery.owner == "", Delivery.lease_until < now),
        )
        .values(owner=server_id, lease_until=until, fence=Delivery.fence + 1)
    )
    rows = await session.execute(
        select(Delivery.instance_id, Delivery.fence).where(
            Delivery.instance_id.in_(instance_ids), Delivery.owner == server_id
        )
    )
    return {iid: int(fence) for iid, fence in rows.all()}


async def release(session: AsyncSession, instance_id: str, server_id: str) -> None:
    await session.execute(
        update(Delivery)
        .where(Delivery.instance_id == instance_id, Delivery.owner == server_id)
        .values(owner="", lease_until=None, fence=Delivery.fence + 1)
    )
