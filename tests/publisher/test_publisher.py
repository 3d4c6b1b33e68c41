"""listener_client.Publisher and SyncPublisher against real API servers in this process:
batching by count and linger, buffer-full policies, ordering, round robin, lost replies."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
import pytest

from listener_client import (
    BufferFullError,
    ListenerClient,
    ListenerClientError,
    Publisher,
    PublisherClosedError,
    PublishResult,
    RetryPolicy,
    SyncPublisher,
)
from tests.publisher.support import Recorder, add_logger, logged, numbered
from tests.security.helpers import make_certs
from tests.support.databases import sqlite_url
from tests.support.servers import eventually, free_port, running_pair

QUICK = RetryPolicy(initial_backoff=0.02, max_backoff=0.2, call_timeout=30)


async def test_batches_by_count_then_linger_and_keeps_order(tmp_path: Path) -> None:
    recorder = Recorder()
    async with (
        running_pair(sqlite_url(tmp_path), tmp_path) as pair,
        Publisher(pair.api_addr, batch_size=10, linger=3600, interceptors=[recorder]) as pub,
    ):
        futures = [await pub.publish(numbered(i)) for i in range(25)]
        # Two full batches go without waiting out the linger; the last five wait for it.
        async with asyncio.timeout(60):
            await asyncio.gather(*futures[:20])
        assert [n for _, n in recorder.calls] == [10, 10]
        assert not any(f.done() for f in futures[20:])
        assert pub.stats.buffered == 5
        await pub.flush()  # does not wait out the linger either
        assert [n for _, n in recorder.calls] == [10, 10, 5]
        results = [f.result() for f in futures]
        assert all(isinstance(r, PublishResult) for r in results)
        assert [r.sequence for r in results] == list(range(1, 26))
        assert len({request_id for request_id, _ in recorder.calls}) == 3
        stats = pub.stats
        assert (stats.buffered, stats.sent, stats.failed, stats.batches) == (0, 25, 0, 3)
        async with ListenerClient(pair.api_addr) as client:
            stored = await client.list_events()
        assert [e.id for e in stored] == [r.id for r in results]
        assert [e.task_fail.task_instance_id for e in stored] == list(range(25))


async def test_linger_sends_a_partial_batch(tmp_path: Path) -> None:
    recorder = Recorder()
    async with (
        running_pair(sqlite_url(tmp_path), tmp_path) as pair,
        Publisher(pair.api_addr, linger=0.3, interceptors=[recorder]) as pub,
    ):
        started = time.monotonic()
        futures = [await pub.publish({"task_fail": {"task_name": f"t{i}"}}) for i in range(3)]
        async with asyncio.timeout(60):
            results = await asyncio.gather(*futures)  # no flush: the linger
        assert time.monotonic() - started >= 0.25
        assert recorder.calls and [n for _, n in recorder.calls] == [3]
        assert [r.sequence for r in results] == [1, 2, 3]


async def test_order_of_many_events_reaches_the_store_and_a_logger(tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    count = 3000
    async with running_pair(sqlite_url(tmp_path), tmp_path) as pair:
        await add_logger(pair.api_addr, out)
        async with Publisher(pair.api_addr, batch_size=64, linger=0, buffer_size=500) as pub:
            futures = []
            for i in range(count):
                futures.append(await pub.publish(numbered(i)))
                if i % 700 == 0:
                    await asyncio.sleep(0)  # let some batches go while publishing
            await pub.flush()
            assert pub.stats.batches >= count // 64
        sequences = [f.result().sequence for f in futures]
        assert sequences == sorted(sequences) and len(set(sequences)) == count
        await eventually(lambda: len(logged(out)) >= count, timeout=120)
        assert [line["task_instance_id"] for line in logged(out)] == list(range(count))


async def test_fail_fast_when_full_then_drains_once_the_server_is_up(tmp_path: Path) -> None:
    port = free_port()
    addr = f"127.0.0.1:{port}"  # nothing listens there yet
    pub = Publisher(addr, buffer_size=5, when_full="fail", retry=QUICK)
    futures = [await pub.publish(numbered(i)) for i in range(5)]
    refused = asyncio.create_task(pub.publish(numbered(5)))
    await asyncio.sleep(0)
    assert refused.done()  # at once: in the call's first step, without waiting for room
    with pytest.raises(BufferFullError) as caught:
        await refused
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.reason == "BUFFER_FULL"
    await eventually(lambda: pub.stats.retried >= 2)
    assert pub.stats.buffered == 5 and not any(f.done() for f in futures)
    async with running_pair(sqlite_url(tmp_path), tmp_path, api_addr=addr):
        async with asyncio.timeout(60):
            results = await asyncio.gather(*futures)
        assert [r.sequence for r in results] == [1, 2, 3, 4, 5]
        sixth = await pub.publish(numbered(5))  # room again
        async with asyncio.timeout(60):
            assert (await sixth).sequence == 6
        await pub.close()
    assert pub.stats.sent == 6 and pub.stats.failed == 0


async def test_block_when_full_waits_up_to_the_timeout_then_for_room(tmp_path: Path) -> None:
    addr = f"127.0.0.1:{free_port()}"
    pub = Publisher(addr, buffer_size=3, block_timeout=0.3, retry=QUICK)
    futures = [await pub.publish(numbered(i)) for i in range(3)]
    started = time.monotonic()
    with pytest.raises(BufferFullError, match="stayed full"):
        await pub.publish(numbered(3))
    assert time.monotonic() - started >= 0.25
    with pytest.raises(BufferFullError):  # for callers that cannot await: never waits
        pub.publish_nowait(numbered(3))
    pub.block_timeout = 120
    blocked = asyncio.create_task(pub.publish(numbered(3)))
    await eventually(lambda: pub.stats.retried >= 3)
    assert not blocked.done()  # still waiting: the server is down, the buffer full
    async with running_pair(sqlite_url(tmp_path), tmp_path, api_addr=addr):
        async with asyncio.timeout(60):
            fourth = await blocked
        async with asyncio.timeout(60):
            await asyncio.gather(*futures, fourth)
        assert fourth.result().sequence == 4
        await pub.close()


async def test_close_with_a_timeout_fails_what_is_left(tmp_path: Path) -> None:
    pub = Publisher(f"127.0.0.1:{free_port()}", retry=QUICK)
    futures = [await pub.publish(numbered(i)) for i in range(3)]
    await pub.close(timeout=0.2)
    for future in futures:
        with pytest.raises(PublisherClosedError):
            future.result()
    assert pub.stats.failed == 3 and pub.stats.buffered == 0
    with pytest.raises(PublisherClosedError):
        await pub.publish(numbered(9))


async def test_bad_events_are_refused_at_publish_not_in_the_batch(tmp_path: Path) -> None:
    async with (
        running_pair(sqlite_url(tmp_path), tmp_path) as pair,
        Publisher(pair.api_addr) as pub,
    ):
        good = await pub.publish(numbered(1))
        with pytest.raises(ValueError, match="needs a payload"):
            await pub.publish({"source": "x"})
        with pytest.raises(ValueError, match="does not match"):
            await pub.publish({"type": "EVENT_TYPE_TASK_START", "task_fail": {}})
        with pytest.raises(ValueError, match="not a ListenerEvent"):
            await pub.publish({"task_fail": {"no_such_field": 1}})
        with pytest.raises(ValueError, match="assigned by the server"):
            await pub.publish({"id": "x", "task_fail": {}})
        async with asyncio.timeout(60):
            assert (await good).sequence == 1


async def test_an_error_that_is_not_retried_fails_the_batch(tmp_path: Path) -> None:
    settings = {"tokens": ("publisher:right-token",)}
    async with running_pair(sqlite_url(tmp_path), tmp_path, **settings) as pair:
        async with Publisher(pair.api_addr, token="wrong") as pub:
            future = await pub.publish(numbered(1))
            await pub.flush()
            with pytest.raises(ListenerClientError) as caught:
                future.result()
            assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert pub.stats.failed == 1 and pub.stats.retried == 0
        async with Publisher(pair.api_addr, token="right-token") as pub:
            assert (await (await pub.publish(numbered(2)))).sequence == 1


async def test_round_robin_over_servers_skips_a_dead_one(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with (
        running_pair(sqlite_url(tmp_path / "a"), tmp_path / "a") as a,
        running_pair(sqlite_url(tmp_path / "b"), tmp_path / "b") as b,
    ):
        targets = [a.api_addr, dead, b.api_addr]
        async with Publisher(targets, batch_size=10, down_for=3600, retry=QUICK) as pub:
            futures = [await pub.publish(numbered(i)) for i in range(100)]
            await pub.flush()
            assert all(f.exception() is None for f in futures)
            by_target = pub.sent_by_target
            assert by_target[dead] == 0
            assert by_target[a.api_addr] >= 40 and by_target[b.api_addr] >= 40
            assert by_target[a.api_addr] + by_target[b.api_addr] == 100
            assert pub.stats.retried == 1  # the dead one was tried once, then skipped


async def test_a_lost_reply_is_retried_with_its_request_id_and_stored_once(
    tmp_path: Path,
) -> None:
    recorder = Recorder(lose=1)
    async with (
        running_pair(sqlite_url(tmp_path), tmp_path) as pair,
        Publisher(pair.api_addr, interceptors=[recorder], retry=QUICK) as pub,
    ):
        futures = [await pub.publish(numbered(i)) for i in range(50)]
        await pub.flush()
        assert [n for _, n in recorder.calls] == [50, 50]
        assert recorder.calls[0][0] == recorder.calls[1][0]  # the same request_id
        assert [f.result().id for f in futures] == [e.id for e in recorder.lost[0].events]
        async with ListenerClient(pair.api_addr) as client:
            assert len(await client.list_events()) == 50
        assert pub.stats.retried == 1


async def test_token_and_mtls(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    settings = {
        "tls_cert": str(certs.server_cert),
        "tls_key": str(certs.server_key),
        "tls_client_ca": str(certs.ca),
        "alert_tls_ca": str(certs.ca),
        "alert_tls_cert": str(certs.client_cert),
        "alert_tls_key": str(certs.client_key),
        "tokens": ("publisher:s3cret",),
    }
    async with running_pair(sqlite_url(tmp_path), tmp_path, **settings) as pair:
        async with Publisher(
            pair.api_addr,
            token="s3cret",
            tls_ca=certs.ca,
            tls_cert=certs.client_cert,
            tls_key=certs.client_key,
        ) as pub:
            assert (await (await pub.publish(numbered(1)))).sequence == 1
        # Without the client certificate the handshake fails: UNAVAILABLE, retried, then given up.
        quick = RetryPolicy(initial_backoff=0.02, max_backoff=0.1, give_up_after=0.5)
        async with Publisher(pair.api_addr, token="s3cret", tls_ca=certs.ca, retry=quick) as pub:
            future = await pub.publish(numbered(2))
            await pub.flush()
            with pytest.raises(ListenerClientError) as caught:
                future.result()
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE
            assert pub.stats.retried >= 1 and pub.stats.failed == 1


async def test_sync_publisher_from_several_threads(tmp_path: Path) -> None:
    async with running_pair(sqlite_url(tmp_path), tmp_path) as pair:

        def work() -> list[list[int]]:
            with SyncPublisher(pair.api_addr, batch_size=50) as pub:
                per_thread: dict[int, list[int]] = {}

                def produce(k: int) -> None:
                    futures = [pub.publish(numbered(k * 1000 + i)) for i in range(300)]
                    per_thread[k] = [f.result(timeout=120).sequence for f in futures]

                threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                pub.flush(timeout=60)
                assert pub.stats.sent == 1200 and pub.stats.buffered == 0
            with pytest.raises(PublisherClosedError):
                pub.publish(numbered(1))
            return list(per_thread.values())

        per_thread = await asyncio.to_thread(work)
        for sequences in per_thread:  # each thread's events in its own order
            assert sequences == sorted(sequences)
        assert len({s for seqs in per_thread for s in seqs}) == 1200


def test_sync_publisher_never_blocks_longer_than_its_policy() -> None:
    addr = f"127.0.0.1:{free_port()}"
    with SyncPublisher(addr, buffer_size=2, when_full="fail", retry=QUICK) as pub:
        first = [pub.publish(numbered(i)) for i in range(2)]
        started = time.monotonic()
        with pytest.raises(BufferFullError):
            pub.publish(numbered(2))
        assert time.monotonic() - started < 5
        with pytest.raises(TimeoutError):
            pub.flush(timeout=0.2)
        with pytest.raises(ValueError):
            pub.publish({})
        pub.close(timeout=0.2)
    for future in first:
        with pytest.raises(PublisherClosedError):
            future.result(timeout=5)
    blocking = SyncPublisher(addr, buffer_size=1, block_timeout=0.3, retry=QUICK)
    blocking.publish(numbered(0))
    started = time.monotonic()
    with pytest.raises(BufferFullError):
        blocking.publish(numbered(1))
    assert 0.25 <= time.monotonic() - started < 10
    blocking.close(timeout=0)
