"""The publisher against API servers run as subprocesses and killed with SIGKILL: nothing it
acknowledged is lost, nothing is stored twice, and a logger instance gets all in order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc

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


class KillDuringCalls(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Once armed, SIGKILLs the API server right after the next PublishEvents request went out
    and starts it again in the background while the publisher retries: the kill lands while a
    batch is in flight, committed or not (or just answered, when a restart was still being
    waited for)."""

    def __init__(self, pair: ServerPair) -> None:
        self.pair = pair
        self.armed = 0
        self.restarts: list[asyncio.Task[None]] = []

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        call = await continuation(client_call_details, request)
        if self.armed:
            self.armed -= 1
            if self.restarts:  # the server this call went to is the restarted one, up
                await self.restarts[-1]
            await asyncio.to_thread(self.pair.kill, "api_server")
            restart = asyncio.to_thread(self.pair.start, "api_server")
            self.restarts.append(asyncio.create_task(restart))
        return call


async def test_publisher_through_two_api_server_kills(tmp_path: Path) -> None:
    count = 20_000
    pair = ServerPair(sqlite_url(tmp_path), tmp_path / "data")
    out = tmp_path / "audit.jsonl"
    try:
        pair.start_both()
        await add_logger(pair.api_addr, out)
        chaos = KillDuringCalls(pair)
        async with Publisher(
            pair.api_addr, block_timeout=300, retry=RETRY, interceptors=[chaos]
        ) as pub:
            futures = []
            for i in range(count):
                futures.append(await pub.publish(numbered(i)))
                if i in (count // 4, count // 2):
                    chaos.armed += 1  # at least 20 calls of 500 events are still to come
                if i % 100 == 0:
                    await asyncio.sleep(0)  # a scheduler's loop does other work too
            await pub.flush()
            await asyncio.gather(*chaos.restarts)
            assert len(chaos.restarts) == 2, "both kills during the run"
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
