"""ListEvents pages stay under the message limit; a malformed etag is the caller's error."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from listener.v1 import event_pb2, event_service_pb2
from listener.v1 import listener_instance_pb2 as li_pb2
from tests.delivery.helpers import create_instance, install
from tests.support.databases import sqlite_url
from tests.support.samples import logger_package, sample_event
from tests.support.servers import running_pair

LIMIT = 3 * 2**20  # the servers' max_message_bytes in this test
BODY = 700 * 1024  # each event's size: 15 of them are far more than one message


def big_event(n: int) -> event_pb2.ListenerEvent:
    event = sample_event("task_added", n)
    event.task_added.task_params = "x" * BODY
    return event


async def test_pages_are_bounded_by_bytes(tmp_path: Path) -> None:
    async with running_pair(sqlite_url(tmp_path), tmp_path, max_message_bytes=LIMIT) as pair:
        published = []
        for n in range(15):
            reply = await pair.clients.events.PublishEvent(
                event_service_pb2.PublishEventRequest(event=big_event(n))
            )
            published.append(reply.id)
        seen: list[str] = []
        token, pages = "", 0
        while True:
            page = await pair.clients.events.ListEvents(
                event_service_pb2.ListEventsRequest(page_size=1000, page_token=token)
            )
            pages += 1
            assert page.ByteSize() < LIMIT
            assert page.events, "a page that moves on holds at least one event"
            seen.extend(e.id for e in page.events)
            token = page.next_page_token
            if not token:
                break
        assert seen == published
        assert pages >= 4  # at most about 4 events of 700 KiB in 3 MiB


async def test_malformed_etag_is_invalid_argument(tmp_path: Path) -> None:
    async with running_pair(sqlite_url(tmp_path), tmp_path) as pair:
        await install(pair.clients, logger_package())
        created = await create_instance(
            pair.clients,
            "etagged",
            "plugins/logger",
            {"logFile": str(tmp_path / "out.jsonl")},
            ["TASK_FAIL"],
        )
        for bad in ("not-an-etag", 'W/"1"', "\uff11"):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pair.clients.instances.DeleteListenerInstance(
                    li_pb2.DeleteListenerInstanceRequest(name=created.name, etag=bad)
                )
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
            assert "etag" in (caught.value.details() or "")
        stale = str(int(created.etag) + 1)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pair.clients.instances.DeleteListenerInstance(
                li_pb2.DeleteListenerInstanceRequest(name=created.name, etag=stale)
            )
        assert caught.value.code() == grpc.StatusCode.ABORTED
        await pair.clients.instances.DeleteListenerInstance(
            li_pb2.DeleteListenerInstanceRequest(name=created.name, etag=created.etag)
        )
