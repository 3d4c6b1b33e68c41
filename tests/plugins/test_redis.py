"""The Redis plugin against the machine's Redis: stream entries, trimming, clear errors, and
delivery through the servers across an outage and a hot swap."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis.asyncio

from listener.v1 import plugin_pb2
from listener_common import DeliveryError
from tests.plugins.support import (
    FAST_RETRY,
    TcpProxy,
    create_instance,
    install,
    load_module,
    make_event,
    package,
    publish,
    require_service,
    run_events,
    typed,
    wait_blocked,
    wait_caught_up,
)
from tests.support.databases import sqlite_url
from tests.support.servers import eventually, free_port, running_pair

HOST, PORT = os.environ.get("LISTENER_TEST_REDIS", "127.0.0.1:6379").rsplit(":", 1)
URL = f"redis://{HOST}:{PORT}/0"
START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


@pytest.fixture(scope="module")
def redis_plugin() -> ModuleType:
    return load_module("redis")


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    """A client of the real server; fails, never skips, when Redis is not running."""
    require_service("Redis", HOST, int(PORT), START)
    connection = redis.asyncio.from_url(URL, decode_responses=True)
    yield connection
    await connection.aclose()


@pytest.fixture
async def key(client: Any) -> AsyncIterator[str]:
    name = f"lt:{uuid.uuid4().hex}"
    try:
        yield name
    finally:
        await client.delete(name)


def test_entry_fields(redis_plugin: ModuleType) -> None:
    event = make_event(3, "TASK_START")
    fields = redis_plugin.entry_fields(event)
    assert fields == {
        "id": "ev-3",
        "type": "TASK_START",
        "sequence": "3",
        "data": json.dumps(event.to_dict(), separators=(",", ":")),
    }


async def test_xadds_in_order_and_trims(redis_plugin: ModuleType, client: Any, key: str) -> None:
    cls = redis_plugin.RedisListener
    plugin = cls()
    await plugin.open(typed(cls, {"url": URL, "stream": key, "maxLen": 100}))
    batch = [make_event(n) for n in range(1, 11)]
    await plugin.on_events(batch)
    await plugin.on_event(make_event(11, "WORKFLOW_END"))
    entries = await client.xrange(key)
    assert [f["id"] for _, f in entries] == [f"ev-{n}" for n in range(1, 12)]
    assert [json.loads(f["data"]) for _, f in entries[:10]] == [e.to_dict() for e in batch]
    assert entries[10][1]["type"] == "WORKFLOW_END" and entries[10][1]["sequence"] == "11"

    await plugin.on_events([make_event(n) for n in range(12, 1012)])
    length = await client.xlen(key)
    assert 100 <= length < 1011  # MAXLEN ~ 100 trims whole nodes: roughly, never below 100
    last = await client.xrevrange(key, count=1)
    assert last[0][1]["id"] == "ev-1011"  # the newest entries are the ones kept
    await plugin.close()


async def test_errors_say_what_is_wrong(redis_plugin: ModuleType, client: Any, key: str) -> None:
    cls = redis_plugin.RedisListener
    closed = free_port()
    with pytest.raises(DeliveryError) as err:
        await cls().open(typed(cls, {"url": f"redis://:pw5@127.0.0.1:{closed}/0", "stream": key}))
    assert f"cannot reach Redis at 127.0.0.1:{closed}/0 (connecting)" in str(err.value)
    assert "pw5" not in str(err.value)

    with pytest.raises(DeliveryError, match="refused the login"):
        await cls().open(
            typed(cls, {"url": URL, "username": "nobody", "password": "x", "stream": key})
        )

    await client.set(key, "not a stream")
    with pytest.raises(DeliveryError, match=f"key '{key}' .* holds a string, not a stream"):
        await cls().open(typed(cls, {"url": URL, "stream": key}))

    await client.delete(key)
    plugin = cls()
    await plugin.open(typed(cls, {"url": URL, "stream": key}))
    try:
        await client.set(key, "replaced")  # someone reuses the key under a running instance
        with pytest.raises(DeliveryError, match="is not a stream"):
            await plugin.on_events([make_event(1), make_event(2)])
        assert await client.get(key) == "replaced"
    finally:
        await plugin.close()


async def test_delivers_in_order_across_an_outage_and_a_hot_swap(
    tmp_path: Path, client: Any, key: str
) -> None:
    proxy = TcpProxy(HOST, int(PORT))
    await proxy.start()
    try:
        async with running_pair(sqlite_url(tmp_path), tmp_path, **FAST_RETRY) as pair:
            c = pair.clients
            await install(c, "redis", tmp_path)
            values = {"url": f"redis://127.0.0.1:{proxy.port}/0", "stream": key, "timeout": "2"}
            await create_instance(c, "rs", "redis", values)
            ids = await publish(c, run_events(1, 10))
            await wait_caught_up(c, "rs")

            await proxy.stop()
            ids += await publish(c, run_events(11, 10))
            await wait_blocked(c, "rs", f"cannot reach Redis at 127.0.0.1:{proxy.port}/0")
            assert await client.xlen(key) == 10
            await proxy.start()
            await wait_caught_up(c, "rs")

            await c.plugins.UpdatePlugin(
                plugin_pb2.UpdatePluginRequest(
                    plugin=plugin_pb2.Plugin(name="plugins/redis"),
                    package=package("redis", tmp_path, version="1.0.1"),
                )
            )
            ids += await publish(c, run_events(21, 5))
            await wait_caught_up(c, "rs")
            assert await eventually(lambda: proxy.open_links == 1)  # the old pool was closed
    finally:
        await proxy.stop()

    entries = await client.xrange(key)
    assert [f["id"] for _, f in entries] == ids  # all of them, each once, in order
    assert [int(f["sequence"]) for _, f in entries] == sorted(
        int(f["sequence"]) for _, f in entries
    )
    assert all(json.loads(f["data"])["id"] == f["id"] for _, f in entries)
