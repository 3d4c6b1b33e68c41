"""Store.read_after (the delivery loops' read, through a connection kept for it on PostgreSQL
and on a SQLite file): the same events as a session's read, every commit seen, concurrent
reads right, and a kept SQLite connection that broke replaced by the next read."""

from __future__ import annotations

import asyncio
import threading

import pytest

from event_store import events
from event_store.store import Store

TRACE = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"


async def _session_read(store: Store, after: int, types: list[int] | None) -> list[object]:
    async with store.reader() as session:
        return list(await events.read_after(session, after, types, 100))


async def test_reads_what_a_session_reads_and_every_new_commit(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        assert await store.read_after(0, None, 10) == []
        await store.append_groups([([(20, b"a"), (21, b"b"), (22, b"c")], None)], [TRACE])
        await store.append_groups([([(21, b"d")], None)])
        for after, types in [(0, None), (1, None), (0, [21]), (0, [21, 22]), (4, None)]:
            assert await store.read_after(after, types, 100) == await _session_read(
                store, after, types
            )
        everything = await store.read_after(0, None, 100)
        assert [(e.sequence, e.type, e.body) for e in everything] == [
            (1, 20, b"a"),
            (2, 21, b"b"),
            (3, 22, b"c"),
            (4, 21, b"d"),
        ]
        assert everything[0].traceparent == TRACE and everything[3].traceparent is None
        assert everything[0].publish_time.tzinfo is not None
        assert [e.sequence for e in await store.read_after(0, None, 2)] == [1, 2]
        assert await store.read_after(0, [], 10) == []
        await store.append_groups([([(23, b"e")], None)])  # the held connection sees it
        assert [e.sequence for e in await store.read_after(4, None, 10)] == [5]
    finally:
        await store.close()


async def test_concurrent_reads_each_get_their_own_answer(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        await store.append_groups([([(20, b"x%d" % i) for i in range(30)], None)])
        answers = await asyncio.gather(*(store.read_after(a, None, 5) for a in range(25)))
        for after, answer in enumerate(answers):
            assert [e.sequence for e in answer] == list(range(after + 1, after + 6))
    finally:
        await store.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_broken_kept_sqlite_connection_is_replaced(db_url: str) -> None:
    threads = threading.active_count()
    store = await Store.open(db_url)
    try:
        reader = store.sqlite_reader
        assert reader is not None
        await store.append_groups([([(20, b"x")], None)])
        assert len(await store.read_after(0, None, 10)) == 1
        kept = reader._conn
        assert kept is not None  # the read went through the kept connection
        await kept.close()  # broken under the reader's feet
        with pytest.raises(ValueError, match="closed"):
            await store.read_after(0, None, 10)
        assert [e.sequence for e in await store.read_after(0, None, 10)] == [1]
        assert reader._conn is not None and reader._conn is not kept
    finally:
        await store.close()
    for _ in range(100):  # the kept connection's thread ends with the store
        if threading.active_count() <= threads:
            break
        await asyncio.sleep(0.01)
    assert threading.active_count() <= threads
