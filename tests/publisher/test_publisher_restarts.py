"""The publisher against API servers run as subprocesses and killed with SIGKILL: nothing it
acknowledged is lost, nothing is stored twice, and a logger instance gets all in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

from listener_client import ListenerClient, Publisher, RetryPolicy
from tests.publisher.support import Recorder, add_logger, logged, numbered
from tests.support.databases import sqlite_url
from tests.support.servers import ServerPair, eventually

RETRY = RetryPolicy(initial_backoff=0.05, max_backoff=0.5, call_timeout=30)


async def restart_api(pair: ServerPair) -> None:
    await asyncio.to_thread(pair.kill, "api_server")
    await asyncio.to_thread(pair.start, "api_server")


async def test_a_reply_lost_across_an_api_server_restart_is_stored_once(tmp_path: Path) -> None:
    pair = ServerPair(sqlite_url(tmp_path), tmp_path / "data")
    try:
        pair.start_both()
        # The first call commits, then the API server is killed and started again before the
        # publisher hears back: it retries the batch, with its request_id, on the new process.
        recorder = Recorder(lose=1, on_lost=lambda: restart_api(pair))
        async with Publisher(pair.api_addr, interceptors=[recorder], retry=RETRY) as pub:
            futures = [await pub.publish(numbered(i)) for i in range(100)]
            await pub.flush()
        assert len(recorder.calls) >= 2
        assert len({request_id for request_id, _ in recorder.calls}) == 1
        assert [f.result().id for f in futures] == [e.id for e in recorder.lost[0].events]
        async with ListenerClient(pair.api_addr) as client:
            stored = await client.list_events()
        assert [e.task_fail.task_instance_id for e in stored] == list(range(100))
    finally:
        pair.stop()


async def test_publisher_through_two_api_server_kills(tmp_path: Path) -> None:
    count = 20_000
    pair = ServerPair(sqlite_url(tmp_path), tmp_path / "data")
    out = tmp_path / "audit.jsonl"
    try:
        pair.start_both()
        await add_logger(pair.api_addr, out)
        async with Publisher(pair.api_addr, block_timeout=300, retry=RETRY) as pub:
            killed_at: list[int] = []

            async def chaos() -> None:
                for at in (count // 4, count * 5 // 8):
                    await eventually(lambda at=at: pub.stats.sent >= at, timeout=300)
                    killed_at.append(pub.stats.sent)
                    await restart_api(pair)

            chaos_task = asyncio.create_task(chaos())
            futures = []
            for i in range(count):
                futures.append(await pub.publish(numbered(i)))
                if i % 100 == 0:
                    await asyncio.sleep(0)  # a scheduler's loop does other work too
            await pub.flush()
            await chaos_task
            assert len(killed_at) == 2 and killed_at[-1] < count, "both kills during the run"
            assert pub.stats.retried >= 2 and pub.stats.failed == 0
        results = [f.result() for f in futures]
        assert len({r.id for r in results}) == count
        sequences = [r.sequence for r in results]
        assert sequences == sorted(sequences)

        async with ListenerClient(pair.api_addr, timeout=60) as client:
            stored = await client.list_events()
        assert [e.task_fail.task_instance_id for e in stored] == list(range(count))
        assert [e.id for e in stored] == [r.id for r in results]

        await eventually(lambda: len(logged(out)) >= count, timeout=300, interval=0.5)
        assert [line["task_instance_id"] for line in logged(out)] == list(range(count))
    finally:
        pair.stop()
