"""A renewal reads the held rows only when they may differ from what the server knows it
holds (``leases.renew``'s ``known``): a fence bumped by an operator, a lease taken by another
server, a deleted instance or a lease it does not know of is found; and once one of its own
lease transactions failed (it may have committed), the server does not trust what it knows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event, select, update

from alert_server import lease_balance
from alert_server.lease_balance import LeaseBalancer
from event_store import leases
from event_store.models import Delivery, ListenerInstance, utcnow
from event_store.retry import in_transaction
from event_store.store import Store
from tests.support.delivery_rows import add_instances

ME = "alert-me"


@asynccontextmanager
async def held_rows(db_url: str, rows: dict[str, tuple[str, int]]) -> AsyncIterator[Store]:
    """A store whose instances (id -> owner, fence) have delivery rows as given."""
    store = await Store.open(db_url)
    try:
        await add_instances(store, sorted(rows))
        async with store.transaction() as session:
            for iid, (owner, fence) in rows.items():
                await session.execute(
                    update(Delivery)
                    .where(Delivery.instance_id == iid)
                    .values(owner=owner, fence=fence)
                )
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def row_reads(store: Store) -> AsyncIterator[list[str]]:
    """The statements that read held rows one per instance, while the block runs."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        flat = " ".join(statement.split()).lower()
        if flat.startswith("select deliveries.instance_id, deliveries.fence"):
            seen.append(flat)

    engine = store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


async def renew(store: Store, known: dict[str, int] | None) -> tuple[dict[str, int], datetime]:
    until = utcnow() + timedelta(seconds=30)
    owned = await in_transaction(store, lambda s: leases.renew(s, ME, until, known))
    return owned, until


async def lease_untils(store: Store) -> dict[str, tuple[str, datetime | None]]:
    async with store.reader() as session:
        rows = await session.execute(
            select(Delivery.instance_id, Delivery.owner, Delivery.lease_until)
        )
        return {iid: (owner, until) for iid, owner, until in rows.all()}


async def change(store: Store, statement: Any) -> None:
    async with store.transaction() as session:
        await session.execute(statement)


START = {"i-a": (ME, 1), "i-b": (ME, 2), "i-c": (ME, 3), "i-d": ("alert-other", 4)}


async def test_what_the_server_knows_is_renewed_without_reading_its_rows(db_url: str) -> None:
    async with held_rows(db_url, START) as store:
        known = {"i-a": 1, "i-b": 2, "i-c": 3}
        async with row_reads(store) as reads:
            owned, until = await renew(store, known)
        assert owned == known
        assert reads == []
        stored = await lease_untils(store)
        assert {i for i, (_, u) in stored.items() if u == until} == set(known)
        # Without what it knows (its first renewal), every held row is read.
        async with row_reads(store) as reads:
            owned, _ = await renew(store, None)
        assert owned == known
        assert len(reads) == 1


Change = Callable[[Store], Awaitable[None]]


async def _fence_bumped(store: Store) -> None:  # an operator's skip or replay
    await change(store, update(Delivery).where(Delivery.instance_id == "i-b").values(fence=3))


async def _taken(store: Store) -> None:  # another server took a lapsed lease
    await change(
        store,
        update(Delivery).where(Delivery.instance_id == "i-c").values(owner="alert-other", fence=4),
    )


async def _deleted(store: Store) -> None:
    await change(store, delete(ListenerInstance).where(ListenerInstance.id == "i-a"))
    await change(store, delete(Delivery).where(Delivery.instance_id == "i-a"))


@pytest.mark.parametrize(
    ("moved", "expected"),
    [
        (_fence_bumped, {"i-a": 1, "i-b": 3, "i-c": 3}),
        (_taken, {"i-a": 1, "i-b": 2}),
        (_deleted, {"i-b": 2, "i-c": 3}),
    ],
    ids=["fence-bumped", "taken", "deleted"],
)
async def test_a_held_row_that_moved_is_read(
    db_url: str, moved: Change, expected: dict[str, int]
) -> None:
    async with held_rows(db_url, START) as store:
        await moved(store)
        async with row_reads(store) as reads:
            owned, _ = await renew(store, {"i-a": 1, "i-b": 2, "i-c": 3})
        assert owned == expected
        assert len(reads) == 1


async def test_a_held_row_the_server_does_not_know_of_is_read(db_url: str) -> None:
    async with held_rows(db_url, START) as store:
        owned, _ = await renew(store, {"i-a": 1, "i-b": 2})
        assert owned == {"i-a": 1, "i-b": 2, "i-c": 3}


async def test_after_a_failed_claim_the_next_renewal_reads_the_rows(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim that committed but whose reply was lost, and a lease taken meanwhile whose
    fence makes the held rows' count and fence sum what the server knew: only forgetting
    what it knew after the failure finds both."""
    rows = {"i-a": ("", 0), "i-b": ("", 4), "i-c": ("", 0)}
    async with held_rows(db_url, rows) as store:
        balancer = LeaseBalancer(store, ME, "127.0.0.1:1", ttl=30.0)
        first = await balancer.renew()
        assert first.owned == {}
        # Takes a (fence 1) and b (fence 5): held {a: 1, b: 5}, sum 6.
        assert await balancer.claim(first, 2) == {"i-a": 1, "i-b": 5}
        renewal = await balancer.renew()
        assert renewal.owned == {"i-a": 1, "i-b": 5}

        real = lease_balance.in_transaction

        async def committed_then_lost(store: Store, work: Any) -> Any:
            await real(store, work)
            raise ConnectionResetError("the reply to the commit was lost")

        monkeypatch.setattr(lease_balance, "in_transaction", committed_then_lost)
        with pytest.raises(ConnectionResetError):
            await balancer.claim(renewal, 1)  # takes c: fence 1
        monkeypatch.setattr(lease_balance, "in_transaction", real)
        # Meanwhile another server takes a: held now b (5) and c (1), sum 6 as before.
        await change(
            store,
            update(Delivery).where(Delivery.instance_id == "i-a").values(owner="x", fence=2),
        )
        after = await balancer.renew()
        assert after.owned == {"i-b": 5, "i-c": 1}
