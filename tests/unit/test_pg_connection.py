"""The connections kept on PostgreSQL for the append and the alert server's reads: one
statement each, the same answers and errors as through the pool, and a new connection after
a lost one."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from chaos.proxy import DbProxy
from event_store import events
from event_store.store import Store
from listener_core import errors
from listener_core.pipeline.error_status import to_service_error
from tests.support.databases import PG, postgres_database


def _addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


async def _idle_after(session: AsyncSession, query: str) -> int:
    """How many connections sit idle (outside a transaction) after a statement like
    ``query``: a kept connection's mark, since the pool's end theirs with ROLLBACK."""
    result = await session.execute(
        text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state = 'idle' AND query LIKE :query"
        ),
        {"query": query},
    )
    return int(result.scalar_one())


async def test_a_lost_writer_connection_is_unavailable_then_reconnects() -> None:
    """The append keeps one connection: when it is cut, the append fails as a store outage
    (UNAVAILABLE, nothing committed), and the next append after the store is back connects
    anew and continues the sequence."""
    async with postgres_database() as url:
        proxy = DbProxy(_addr(PG))
        await proxy.start()
        store = await Store.open(proxy.url(url))
        try:
            [[first]] = await store.append_groups([([(20, b"a")], None)])
            await proxy.cut()
            with pytest.raises(Exception) as caught:
                await store.append_groups([([(20, b"b")], None)])
            assert isinstance(to_service_error(caught.value), errors.Unavailable), caught.value
            await proxy.shutting_down()  # reconnecting meets PostgreSQL's 57P03
            with pytest.raises(Exception) as caught:
                await store.append_groups([([(20, b"c")], None)])
            assert isinstance(to_service_error(caught.value), errors.Unavailable), caught.value
            await proxy.restore()
            [[again]] = await store.append_groups([([(20, b"d")], None)])
            assert (first.sequence, again.sequence) == (1, 2)  # the failed ones left no gap
        finally:
            await store.close()
            await proxy.close()


async def test_reads_on_the_kept_connection_answer_as_the_session_reads() -> None:
    async with postgres_database() as url:
        store = await Store.open(url)
        try:
            await store.append_groups([([(20, b"a"), (21, b"b")] * 5, None)])
            for types, limit in ((None, 100), ([21], 100), ([20, 21], 3), ([22], 10)):
                async with store.reader() as session:
                    expected = await events.read_after(session, 2, types, limit)
                assert await store.read_after(2, types, limit) == expected
            assert await store.read_after(0, [], 10) == []
            assert [e.sequence for e in await store.read_after(7, None, 10)] == [8, 9, 10]
            async with store.reader() as session:  # the read went to an autocommit connection
                assert await _idle_after(session, "SELECT sequence%") == 1
        finally:
            await store.close()


async def test_a_read_does_not_wait_for_the_kept_connection() -> None:
    """While the kept connection runs a statement, a read goes through the pool."""
    async with postgres_database() as url:
        store = await Store.open(url)
        try:
            await store.append_groups([([(20, b"a")] * 3, None)])
            assert store.pg_reader is not None
            sleeper = asyncio.ensure_future(store.pg_reader.fetch("SELECT pg_sleep(3)", ()))
            await asyncio.sleep(0)
            assert store.pg_reader.busy
            assert [e.sequence for e in await store.read_after(0, None, 10)] == [1, 2, 3]
            assert not sleeper.done()
            await sleeper
        finally:
            await store.close()


async def test_a_lost_reading_connection_is_unavailable_then_reconnects() -> None:
    async with postgres_database() as url:
        proxy = DbProxy(_addr(PG))
        await proxy.start()
        store = await Store.open(proxy.url(url))
        try:
            await store.append_groups([([(20, b"a")] * 2, None)])
            assert len(await store.read_after(0, None, 10)) == 2
            await proxy.cut()
            with pytest.raises(Exception) as caught:
                await store.read_after(0, None, 10)
            assert isinstance(to_service_error(caught.value), errors.Unavailable), caught.value
            await proxy.restore()
            assert len(await store.read_after(1, None, 10)) == 1
        finally:
            await store.close()
            await proxy.close()


async def test_request_ids_found_on_the_kept_connection_as_through_the_session() -> None:
    """The group commit's look-up of earlier request ids: the caller's own row, else one
    from before scoping (caller ""), else nothing."""
    async with postgres_database() as url:
        store = await Store.open(url)
        try:
            mine = events.RequestKey("token:a", "req-1", "d" * 64)
            theirs = events.RequestKey("token:b", "req-1", "e" * 64)
            old = events.RequestKey("token:a", "req-old", "f" * 64)
            new = events.RequestKey("token:a", "req-new", "0" * 64)
            await store.append_groups([([(20, b"a"), (20, b"b")], mine)])
            async with store.transaction() as session:
                await session.execute(
                    text(
                        "INSERT INTO publish_requests (caller, request_id, digest, "
                        "first_sequence, count, create_time) "
                        "VALUES ('', 'req-old', NULL, 1, 1, now())"
                    )
                )
            keys = [mine, theirs, old, new]
            found = await store.find_requests(keys)
            async with store.reader() as session:
                assert found == await events.find_requests(session, keys)
                assert await _idle_after(session, "SELECT caller, request_id%") == 1
            assert found == {
                mine: events.EarlierRequest("d" * 64, 1, 2),
                old: events.EarlierRequest(None, 1, 1),
            }
            assert await store.find_requests([]) == {}
        finally:
            await store.close()
