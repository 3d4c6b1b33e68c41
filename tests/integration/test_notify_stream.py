"""The nudge on a stream between real servers: the API server's NotifyStream wakes delivery,
and after the alert server is killed and restarted the stream is reopened and delivery goes on.

The alert server's counter poll is set to a minute here, so an event delivered within seconds
was woken by a nudge."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from listener.v1 import event_service_pb2
from tests.delivery.helpers import logging_task_failures
from tests.delivery.test_failover import clients
from tests.support.databases import sqlite_url
from tests.support.jsonl import read_jsonl
from tests.support.samples import sample_event
from tests.support.servers import Clients, ServerPair, eventually, free_port


def wake_ups(metrics_addr: str) -> tuple[int, int]:
    """(messages read on NotifyStream, unary Notify calls answered OK) by the alert server."""
    with urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    streamed = unary = 0
    for line in text.splitlines():
        value = int(float(line.rpartition(" ")[2])) if line[:1] != "#" else 0
        if line.startswith("listener_notify_stream_messages_total "):
            streamed += value
        elif 'PluginHostService/Notify"' in line and line.startswith(
            "listener_rpc_requests_total{"
        ):
            unary += value if 'code="OK"' in line else 0
    return streamed, unary


async def publish_and_see(c: Clients, out: Path, n: int, timeout: float = 10.0) -> None:
    reply = await c.events.PublishEvent(
        event_service_pb2.PublishEventRequest(event=sample_event("task_fail", n)), timeout=10
    )
    await eventually(lambda: reply.id in {x["id"] for x in read_jsonl(out)}, timeout=timeout)


async def test_nudges_on_the_stream_wake_delivery_and_survive_a_restart(tmp_path: Path) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    pair = ServerPair(
        sqlite_url(tmp_path),
        tmp_path / "data",
        extra_env={"LISTENER_POLL_INTERVAL": "60", "LISTENER_ALERT_METRICS_ADDR": metrics},
    )
    out = tmp_path / "out.jsonl"
    try:
        pair.start_both()
        async with clients(pair.api_addr) as c:
            await logging_task_failures(c, "nudged", out)
            for n in range(1, 6):
                await publish_and_see(c, out, n, timeout=30 if n == 1 else 10)
            streamed, unary = wake_ups(metrics)
            assert streamed >= 4  # each publish after the first was woken by a message
            assert unary == 0  # and none needed the unary Notify

            pair.kill("alert_server")
            pair.start("alert_server")
            # Delivery goes on: a nudge sent while the API server's channel still waits to
            # reconnect is lost (the counter poll's to cover), the next ones arrive, by Notify
            # while the stream is closed, then on a new stream.
            n = 5
            while wake_ups(metrics)[0] == 0:
                n += 1
                reply = await c.events.PublishEvent(
                    event_service_pb2.PublishEventRequest(event=sample_event("task_fail", n))
                )
                await asyncio.sleep(0.5)
                assert n < 100, "the API server did not reopen its stream"
            await eventually(lambda: reply.id in {x["id"] for x in read_jsonl(out)}, timeout=10)
            streamed_before = wake_ups(metrics)[0]
            for more in range(n + 1, n + 4):
                await publish_and_see(c, out, more)
            assert wake_ups(metrics)[0] >= streamed_before + 3
    finally:
        pair.stop()
