"""PostgreSQL publishes commit in one statement: same rows, sequences, errors and NOTIFY as
the transactional path."""

from __future__ import annotations

import asyncio
from datetime import UTC

import asyncpg
from sqlalchemy import text

from event_store import events
from event_store.store import Store
from tests.support.databases import postgres_database


def key(request_id: str) -> events.RequestKey:
    return events.RequestKey("token:test", request_id, "d" * 64)


async def test_appends_commit_in_order_with_their_rows_and_request_ids() -> None:
    async with postgres_database() as url:
        store = await Store.open(url)
        try:
            batches = await asyncio.gather(
                *(
                    store.append_groups(
                        [
                            ([(20, b"a%d" % i), (21, b"b%d" % i)], key(f"req-{i}")),
                            ([(22, b"c%d" % i)], None),
                        ],
                        ["00-" + "1" * 32 + "-" + "2" * 16 + "-01", None] if i % 2 else None,
                    )
                    for i in range(20)
                )
            )
            everything = (e for batch in batches for g in batch for e in g)
            stored = sorted(everything, key=lambda e: e.sequence)
            assert [e.sequence for e in stored] == list(range(1, 61))  # contiguous, none shared
            for batch in batches:  # each publish's events in order, in one range
                flat = [e.sequence for g in batch for e in g]
                assert flat == list(range(flat[0], flat[0] + 3))
            async with store.reader() as session:
                assert await events.max_sequence(session) == 60
                read = await events.read_after(session, 0, None, 100)
                assert read == [
                    events.StoredEvent(
                        e.sequence,
                        e.id,
                        e.type,
                        e.publish_time.replace(tzinfo=None).replace(tzinfo=UTC),
                        e.body,
                        e.traceparent,
                    )
                    for e in stored
                ]
                assert batches[3][0][0].traceparent is not None
                assert batches[4][0][0].traceparent is None
                earlier = await events.find_request(session, key("req-7"))
                assert earlier is not None
                assert earlier.digest == "d" * 64
                assert await events.earlier_events(session, earlier) == batches[7][0]
                count = await session.execute(text("SELECT count(*) FROM publish_requests"))
                assert count.scalar_one() == 20
        finally:
            await store.close()


async def test_a_commit_notifies_listeners_with_its_last_sequence() -> None:
    async with postgres_database() as url:
        store = await Store.open(url)
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        listener = await asyncpg.connect(dsn)
        heard: asyncio.Queue[str] = asyncio.Queue()
        try:
            await listener.add_listener(
                events.NOTIFY_CHANNEL, lambda _c, _p, _ch, payload: heard.put_nowait(payload)
            )
            await store.append_groups([([(20, b"x")] * 4, None), ([(20, b"y")], None)])
            async with asyncio.timeout(10):
                assert await heard.get() == "5"
        finally:
            await listener.close()
            await store.close()
