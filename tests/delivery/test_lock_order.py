"""Writers of ``deliveries`` take row locks in one order, and a transaction the store aborts
for a deadlock runs again: forced interleavings on PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from event_store import deliveries, leases
from event_store.models import utcnow
from event_store.retry import in_transaction
from event_store.store import Store
from tests.support.databases import mysql_database, postgres_database
from tests.support.delivery_rows import add_instances
from tests.support.servers import eventually

OWNER = "alert-x"


@asynccontextmanager
async def store_with_rows(kind: str) -> AsyncIterator[Store]:
    """A fresh store holding instances ``i-a`` and ``i-b`` owned by OWNER, stored in the
    order b, a (so a scan in storage order meets them the other way round from ids)."""
    database = postgres_database if kind == "postgresql" else mysql_database
    async with database() as url:
        store = await Store.open(url)
        try:
            await add_instances(store, ("i-b", "i-a"), owner=OWNER, fence=1)
            yield store
        finally:
            await store.close()


async def waiting_on_locks(store: Store, kind: str) -> int:
    """How many transactions on this test's database wait for a row lock right now."""
    async with store.reader() as session:
        if kind == "postgresql":
            query = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
        else:  # innodb_trx knows no database; the (live) processlist does
            query = (
                "SELECT count(*) FROM information_schema.innodb_trx t "
                "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                "WHERE p.db = DATABASE() AND t.trx_state = 'LOCK WAIT'"
            )
        return int((await session.execute(text(query))).scalar_one())


#: Seconds between two looks at the lock waits. MariaDB serves information_schema.innodb_trx
#: from a snapshot it refreshes only when nobody has read it for 100 ms
#: (storage/innobase/trx/trx0i_s.cc: CACHE_MIN_IDLE_TIME_NS, can_cache_be_updated; each read
#: sets last_read): polled every 50 ms, as this test once did, the reads themselves keep the
#: snapshot taken before the renewal waited, and the wait is never seen.
POLL = {"postgresql": 0.05, "mysql": 0.25}


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
async def test_lease_renewal_and_progress_write_do_not_deadlock(kind: str) -> None:
    """The interleaving that deadlocked: the renewal waits for a row the progress write
    needs last while the progress write holds the one the renewal needs next. With one
    lock order for both, one simply waits for the other."""
    async with store_with_rows(kind) as store:
        holder = store.sessions()
        tasks: list[asyncio.Task[Any]] = []
        try:
            await holder.begin()
            await holder.execute(
                text("SELECT instance_id FROM deliveries WHERE instance_id = 'i-b' FOR UPDATE")
            )

            async def renew() -> dict[str, int]:
                async with store.transaction() as session:  # no retry: a deadlock would raise
                    return await leases.renew(session, OWNER, utcnow())

            async def progress() -> set[str]:
                async with store.transaction() as session:
                    return await deliveries.record_progress_many(
                        session, [("i-a", OWNER, 1, 7, "[]"), ("i-b", OWNER, 1, 7, "[]")]
                    )

            renewal = asyncio.create_task(renew())
            tasks.append(renewal)
            await eventually(lambda: _waits(store, kind, 1), timeout=30, interval=POLL[kind])
            written = asyncio.create_task(progress())
            tasks.append(written)
            await eventually(lambda: _waits(store, kind, 2), timeout=30, interval=POLL[kind])
            await holder.commit()  # both go on now: in one order they cannot wait on each other
            async with asyncio.timeout(60):
                owned, refused = await asyncio.gather(renewal, written)
        finally:  # a failure above must not leave a transaction holding rows (and the table)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await holder.close()
        assert owned == {"i-a": 1, "i-b": 1}
        assert refused == set()
        async with store.reader() as session:
            rows = await deliveries.deliveries_by_id(session, ["i-a", "i-b"])
        assert {r.delivered_seq for r in rows.values()} == {7}


async def _waits(store: Store, kind: str, count: int) -> bool:
    return await waiting_on_locks(store, kind) >= count


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
async def test_a_transaction_aborted_by_a_deadlock_runs_again(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two writers forced into opposite lock orders: the store aborts one, which runs again
    from the start and succeeds."""
    caplog.set_level(logging.INFO, logger="event_store.retry")
    async with store_with_rows(kind) as store:
        first_locked = {"i-a": asyncio.Event(), "i-b": asyncio.Event()}
        runs = {"i-a": 0, "i-b": 0}

        def writer(first: str, second: str, value: int):  # type: ignore[no-untyped-def]
            async def work(session: AsyncSession) -> None:
                runs[first] += 1
                await session.execute(
                    text("UPDATE deliveries SET attempts = :v WHERE instance_id = :i"),
                    {"v": value, "i": first},
                )
                if runs[first] == 1:  # only the first attempt waits for the other
                    first_locked[first].set()
                    await first_locked[second].wait()
                await session.execute(
                    text("UPDATE deliveries SET last_error = :v WHERE instance_id = :i"),
                    {"v": str(value), "i": second},
                )

            return work

        async with asyncio.timeout(90):
            await asyncio.gather(
                in_transaction(store, writer("i-a", "i-b", 1)),
                in_transaction(store, writer("i-b", "i-a", 2)),
            )
        assert sum(runs.values()) >= 3, runs  # one of them ran again
        assert "aborted by a conflict" in caplog.text
        async with store.reader() as session:
            rows = await deliveries.deliveries_by_id(session, ["i-a", "i-b"])
        assert rows["i-a"].attempts == 1 and rows["i-b"].attempts == 2
        assert {rows["i-a"].last_error, rows["i-b"].last_error} == {"1", "2"}
