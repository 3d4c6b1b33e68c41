"""Runners at the same place share one read; a kept answer never hides newer events."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from alert_server.reads import SharedReads
from alert_server.wakeup import SequenceSignal
from event_store import events
from event_store.store import Store
from tests.support.databases import sqlite_url


async def _publish(store: Store, count: int) -> None:
    async with store.write_connection() as connection:
        await events.append_groups(connection, [([(20, b"x")] * count, None)])


def count_queries(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """One entry per read that reaches the store."""
    calls: list[None] = []
    real = Store.read_after

    async def counted(*args: Any, **kwargs: Any) -> list[events.StoredEvent]:
        calls.append(None)
        return await real(*args, **kwargs)

    monkeypatch.setattr(Store, "read_after", counted)
    return calls


async def test_concurrent_reads_of_one_range_are_one_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries = count_queries(monkeypatch)
    store = await Store.open(sqlite_url(tmp_path))
    try:
        await _publish(store, 5)
        reads = SharedReads(store, SequenceSignal())
        answers = await asyncio.gather(*(reads.read_after(0, None, 100) for _ in range(50)))
        assert len(queries) == 1
        assert all([e.sequence for e in a] == [1, 2, 3, 4, 5] for a in answers)
        # A runner asking a moment later gets the kept answer; another range is a new query.
        assert len(await reads.read_after(0, None, 100)) == 5
        assert [e.sequence for e in await reads.read_after(2, None, 100)] == [3, 4, 5]
        assert [e.sequence for e in await reads.read_after(0, [21], 100)] == []
        assert len(queries) == 3
    finally:
        await store.close()


async def test_empty_answers_are_not_kept(tmp_path: Path) -> None:
    store = await Store.open(sqlite_url(tmp_path))
    try:
        reads = SharedReads(store, SequenceSignal())
        assert await reads.read_after(0, None, 10) == []
        await _publish(store, 2)
        assert [e.sequence for e in await reads.read_after(0, None, 10)] == [1, 2]
    finally:
        await store.close()


async def test_one_cancelled_reader_does_not_cancel_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries = count_queries(monkeypatch)
    store = await Store.open(sqlite_url(tmp_path))
    try:
        await _publish(store, 3)
        reads = SharedReads(store, SequenceSignal())
        first = asyncio.create_task(reads.read_after(0, None, 10))
        second = asyncio.create_task(reads.read_after(0, None, 10))
        await asyncio.sleep(0)
        first.cancel()
        assert [e.sequence for e in await second] == [1, 2, 3]
        assert len(queries) == 1
    finally:
        await store.close()


async def test_a_read_begun_before_the_latest_wake_up_is_not_joined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries = count_queries(monkeypatch)
    """A runner that knows of sequence N must not take the answer of a read that may have
    begun before N was committed: it could be empty, and the runner would wait for a
    wake-up that already came."""
    store = await Store.open(sqlite_url(tmp_path))
    try:
        signal = SequenceSignal()
        reads = SharedReads(store, signal)
        early = asyncio.create_task(reads.read_after(0, None, 10))
        await asyncio.sleep(0)  # its query is in flight, begun when nothing was announced
        await _publish(store, 2)
        signal.bump(2)
        late = await reads.read_after(0, None, 10)
        assert [e.sequence for e in late] == [1, 2]
        assert len(queries) == 2
        await early
    finally:
        await store.close()


async def test_kept_answers_are_bounded_in_bytes(tmp_path: Path) -> None:
    store = await Store.open(sqlite_url(tmp_path))
    try:
        async with store.write_connection() as connection:
            await events.append_groups(connection, [([(20, b"x" * 1000)] * 10, None)])
        reads = SharedReads(store, SequenceSignal(), keep_bytes=2500)
        for after in range(5):
            await reads.read_after(after, None, 2)  # 2,000 bytes each
        assert reads._kept_bytes <= 2500 and len(reads._recent) == 1
        assert await reads.read_after(0, None, 100) != []  # too big to keep: still answered
        assert reads._kept_bytes <= 2500
    finally:
        await store.close()
