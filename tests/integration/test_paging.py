"""Page tokens are bound to the request they came from (AIP-158): the next page needs the
same filters; other filters with an old token are INVALID_ARGUMENT, not another listing."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from listener.v1 import event_service_pb2 as es_pb2
from tests.support.databases import sqlite_url
from tests.support.samples import event_type, sample_event
from tests.support.servers import running_pair


async def test_a_page_token_works_only_with_the_filters_it_was_issued_for(
    tmp_path: Path,
) -> None:
    async with running_pair(sqlite_url(tmp_path), tmp_path) as pair:
        events = pair.clients.events
        batch = [sample_event("task_fail", n) for n in range(4)] + [
            sample_event("workflow_end", n) for n in range(4)
        ]
        await events.PublishEvents(es_pb2.PublishEventsRequest(events=batch))
        only_failures = [event_type("TASK_FAIL")]
        first = await events.ListEvents(
            es_pb2.ListEventsRequest(page_size=2, event_types=only_failures)
        )
        assert first.next_page_token
        # The same request (page_size may change) goes on where the first page ended.
        second = await events.ListEvents(
            es_pb2.ListEventsRequest(
                page_size=10, event_types=only_failures, page_token=first.next_page_token
            )
        )
        assert len(first.events) + len(second.events) == 4
        assert {e.type for e in second.events} == {event_type("TASK_FAIL")}
        # Other filters with that token: refused, naming the token.
        for other in (
            es_pb2.ListEventsRequest(page_token=first.next_page_token),
            es_pb2.ListEventsRequest(
                event_types=only_failures, after_sequence=1, page_token=first.next_page_token
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await events.ListEvents(other)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "page_token" in (err.value.details() or "")
