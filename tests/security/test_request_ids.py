"""Publish request ids are scoped to their caller and bound to their content (issue #21).

Before, one table of request ids served every caller: a second caller publishing other events
with an id a first caller had used got OK and the first caller's ids back, and its events were
never stored. Now the key is (caller, request_id) — the caller being the token's digest, or the
peer host when the API is open — and a reuse with other events is ALREADY_EXISTS naming the
request id (AIP-155), while a retry with the same events still gets the original ids.
Each test runs on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from alembic import command
from sqlalchemy import Connection, text

from event_store import events
from event_store.engine import create_engine
from event_store.migrate import alembic_config
from listener.v1 import event_pb2, event_service_pb2
from tests.security.helpers import details
from tests.support.samples import sample_event
from tests.support.servers import running_pair

TOKENS = {"a": "pub-a-5c1", "b": "pub-b-e09"}


def auth(who: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {TOKENS[who]}")]


async def max_sequence(store: object) -> int:
    async with store.reader() as session:  # type: ignore[attr-defined]
        return int(await events.max_sequence(session))


async def test_request_ids_are_per_caller_and_bound_to_their_events(
    db_url: str, tmp_path: Path
) -> None:
    tokens = tuple(f"publisher:{t}" for t in TOKENS.values())
    async with running_pair(db_url, tmp_path, tokens=tokens) as pair:
        stub = pair.clients.events

        def publish(
            who: str, *batch: event_pb2.ListenerEvent, request_id: str = "job-42"
        ) -> object:
            return stub.PublishEvents(
                event_service_pb2.PublishEventsRequest(events=batch, request_id=request_id),
                metadata=auth(who),
            )

        first = await publish("a", sample_event("task_fail", 1), sample_event("task_end", 2))
        # The same caller retrying the same events gets the same ids, and nothing is stored.
        again = await publish("a", sample_event("task_fail", 1), sample_event("task_end", 2))
        assert [e.id for e in again.events] == [e.id for e in first.events]  # type: ignore[attr-defined]
        assert await max_sequence(pair.api.store) == 2

        # Another caller with the same id publishes its own events: stored, with its own ids.
        other = await publish("b", sample_event("workflow_end", 3))
        assert other.events[0].sequence == 3  # type: ignore[attr-defined]
        assert other.events[0].id not in {e.id for e in first.events}  # type: ignore[attr-defined]
        # …and its retries are answered from its own publish.
        assert (await publish("b", sample_event("workflow_end", 3))).events == other.events  # type: ignore[attr-defined]

        # The first caller reusing its id for other events is refused, naming the id.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await publish("a", sample_event("task_fail", 9))
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "job-42" in (caught.value.details() or "")
        assert details(caught.value).reason == "REQUEST_ID_REUSED"
        # The same with PublishEvent, and a subset of the first batch is other content too.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PublishEvent(
                event_service_pb2.PublishEventRequest(
                    event=sample_event("task_fail", 1), request_id="job-42"
                ),
                metadata=auth("a"),
            )
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert await max_sequence(pair.api.store) == 3  # nothing stored by the refusals


def _upgrade_to(conn: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)
    conn.commit()


async def test_request_ids_stored_before_scoping_still_answer_retries(
    db_url: str, tmp_path: Path
) -> None:
    """A publish_requests row from before the migration (no caller, no digest) keeps working:
    a retry with its id gets the original event back, whoever sends it."""
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_upgrade_to, "0003")
            await conn.execute(
                text(
                    "INSERT INTO events (sequence, id, type, publish_time, body) "
                    "VALUES (1, 'legacy-id', 20, '2026-01-01 00:00:00.000000', :body)"
                ),
                {"body": sample_event("task_fail", 1).SerializeToString()},
            )
            await conn.execute(text("UPDATE counters SET value = 1"))
            await conn.execute(
                text(
                    "INSERT INTO publish_requests (request_id, first_sequence, count, "
                    "create_time) VALUES ('old-req', 1, 1, '2099-01-01 00:00:00.000000')"
                )
            )
            await conn.commit()
    finally:
        await engine.dispose()

    async with running_pair(db_url, tmp_path, tokens=(f"publisher:{TOKENS['a']}",)) as pair:
        reply = await pair.clients.events.PublishEvent(
            event_service_pb2.PublishEventRequest(
                event=sample_event("task_fail", 1), request_id="old-req"
            ),
            metadata=auth("a"),
        )
        assert (reply.id, reply.sequence) == ("legacy-id", 1)
        assert await max_sequence(pair.api.store) == 1
