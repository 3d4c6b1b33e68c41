"""SQLite publishes commit on the store's writer thread: same results, same errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

from event_store import events
from event_store.store import Store
from tests.support.databases import sqlite_url


def key(request_id: str) -> events.RequestKey:
    return events.RequestKey("token:test", request_id, "0" * 64)


async def test_appends_commit_in_order_and_keep_request_ids(tmp_path: Path) -> None:
    store = await Store.open(sqlite_url(tmp_path))
    try:
        assert store.writer is not None  # a SQLite file gets the writer thread
        batches = await asyncio.gather(
            *(store.append_groups([([(20, b"e")] * 3, key(f"req-{i}"))]) for i in range(20))
        )
        sequences = sorted(e.sequence for [group] in batches for e in group)
        assert sequences == list(range(1, 61))  # contiguous, nothing shared
        async with store.reader() as session:
            earlier = await events.find_request(session, key("req-7"))
            assert earlier is not None
            assert await events.earlier_events(session, earlier) == batches[7][0]
            assert await events.max_sequence(session) == 60
            read = await events.read_after(session, 0, None, 100)
        assert [e.id for e in read] == [
            e.id for e in sorted((e for [g] in batches for e in g), key=lambda e: e.sequence)
        ]
    finally:
        await store.close()
