"""kill -9 of the alert server with events pending: after a restart, all arrive in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from listener.v1 import (
    event_service_pb2,
    event_service_pb2_grpc,
    listener_instance_pb2,
    listener_instance_pb2_grpc,
    plugin_pb2,
    plugin_pb2_grpc,
)
from tests.support.databases import sqlite_url
from tests.support.jsonl import read_jsonl
from tests.support.samples import event_type, sample_event, slow_package
from tests.support.servers import ServerPair, eventually


def ids_in(path: Path) -> list[str]:
    return [x["id"] for x in read_jsonl(path)]


async def test_alert_server_kill9_then_restart_delivers_everything_in_order(tmp_path: Path) -> None:
    pair = ServerPair(sqlite_url(tmp_path), tmp_path / "data")
    out = tmp_path / "out.jsonl"
    try:
        pair.start_both()
        async with grpc.aio.insecure_channel(pair.api_addr) as channel:
            plugins = plugin_pb2_grpc.PluginServiceStub(channel)
            instances = listener_instance_pb2_grpc.ListenerInstanceServiceStub(channel)
            events = event_service_pb2_grpc.EventServiceStub(channel)
            await plugins.CreatePlugin(plugin_pb2.CreatePluginRequest(package=slow_package()))
            await instances.CreateListenerInstance(
                listener_instance_pb2.CreateListenerInstanceRequest(
                    listener_instance_id="slow",
                    listener_instance=listener_instance_pb2.ListenerInstance(
                        plugin="plugins/slow",
                        params={"logFile": str(out), "delayMs": "10"},
                        event_types=[event_type("TASK_FAIL")],
                    ),
                )
            )
            reply = await events.PublishEvents(
                event_service_pb2.PublishEventsRequest(
                    events=[sample_event("task_fail", i) for i in range(300)]
                )
            )
            published = [e.id for e in reply.events]

            await eventually(lambda: len(ids_in(out)) >= 40)
            pair.kill("alert_server")
            before = ids_in(out)
            assert len(before) < len(published), "events must still be pending at the kill"
            await asyncio.sleep(0.3)
            pair.start("alert_server")

            await eventually(lambda: set(ids_in(out)) >= set(published), timeout=60)
            delivered = ids_in(out)
            first_seen = list(dict.fromkeys(delivered))
            assert first_seen == published
            # Redeliveries restart from the recorded cursor: the lines after the kill begin
            # with an event already delivered or the next one, then follow the publish order.
            after = delivered[len(before) :]
            start = published.index(after[0])
            assert start <= len(before)
            assert after == published[start:]
    finally:
        pair.stop()
