"""Operator actions on listener instances (AIP-136 custom methods of ListenerInstanceService).

Plain functions the servicer (``instance_service``) calls with an instance id it has parsed.
Each action changes the instance's delivery state in the store under a row lock and bumps
its fence; the servicer then nudges the alert servers, so the runner re-reads its state at
once, and a runner in the middle of a batch cannot write over the change
(``event_store.operations``).
"""

from __future__ import annotations

import uuid
from datetime import UTC

from api_server import conversions, paging
from event_store import catalog
from event_store import operations as store_ops
from event_store.events import StoredEvent
from event_store.models import Event, ParkedEvent, utcnow
from event_store.store import Store
from listener import event_types
from listener.v1 import event_pb2, listener_instance_pb2
from listener_core import errors

pb = listener_instance_pb2


def test_event(event_type: int) -> event_pb2.ListenerEvent:
    """A recognisable sample event: source "listener-test", id "test-…", sequence 0."""
    if event_type not in event_types.PAYLOAD_FIELD:
        raise errors.InvalidArgument(
            f"event_type {event_type} is not an event type",
            field_violations=[("event_type", "required, one of the 13 types")],
        )
    event = event_pb2.ListenerEvent(
        id=f"test-{uuid.uuid4()}",
        type=event_pb2.EventType.ValueType(event_type),
        source="listener-test",
    )
    getattr(event, event_types.PAYLOAD_FIELD[event_type]).SetInParent()
    event.event_time.GetCurrentTime()
    event.publish_time.GetCurrentTime()
    return event


async def retry(store: Store, instance_id: str) -> None:
    async with store.transaction() as session:
        await store_ops.retry_now(session, instance_id)


async def skip(store: Store, instance_id: str) -> None:
    async with store.transaction() as session:
        await store_ops.skip_head(session, instance_id)


async def pause(store: Store, instance_id: str) -> None:
    await _set_state(store, instance_id, "PAUSED")


async def resume(store: Store, instance_id: str) -> None:
    await _set_state(store, instance_id, "ACTIVE")


async def _set_state(store: Store, instance_id: str, state: str) -> None:
    """PAUSED or ACTIVE; the same state again changes nothing."""
    async with store.transaction() as session:
        inst = await catalog.get_instance(session, instance_id, for_update=True)
        if inst.desired_state != state:
            inst.desired_state = state
            inst.revision += 1
            inst.update_time = utcnow()
            await store_ops.bump(session, instance_id)


async def replay(store: Store, instance_id: str, request: pb.ReplayListenerInstanceRequest) -> None:
    start = request.WhichOneof("start")
    if start is None:
        raise errors.InvalidArgument(
            "set from_sequence or from_time",
            field_violations=[("start", "one of from_sequence, from_time is required")],
        )
    if start == "from_sequence" and request.from_sequence < 1:
        raise errors.InvalidArgument(
            "from_sequence must be 1 or more", field_violations=[("from_sequence", "< 1")]
        )
    async with store.transaction() as session:
        if start == "from_sequence":
            await store_ops.replay(session, instance_id, request.from_sequence, None)
        else:
            when = request.from_time.ToDatetime(tzinfo=UTC)
            await store_ops.replay(session, instance_id, None, when)


def _parked_message(row: ParkedEvent, event: Event | None) -> pb.ParkedEvent:
    item = pb.ParkedEvent(
        attempts=row.attempts, last_error=row.last_error, redelivery_pending=bool(row.redeliver)
    )
    item.park_time.FromDatetime(row.park_time)
    if event is not None:
        stored = StoredEvent(event.sequence, event.id, event.type, event.publish_time, event.body)
        item.event.CopyFrom(conversions.event_message(stored))
    else:  # purged: only what the list itself remembers
        item.event.id, item.event.sequence = row.event_id, row.sequence
    return item


async def parked_page(
    store: Store, instance_id: str, request: pb.ListParkedEventsRequest
) -> pb.ListParkedEventsResponse:
    size = paging.page_size(request.page_size)
    token = paging.decode(request.page_token, request.parent)
    after = int(token) if token.isdigit() else 0
    async with store.reader() as session:
        await catalog.get_instance(session, instance_id)
        rows, more = await paging.read_page(
            lambda limit: store_ops.list_parked(session, instance_id, after, limit), size
        )
    return pb.ListParkedEventsResponse(
        parked_events=[_parked_message(row, event) for row, event in rows],
        next_page_token=(paging.encode(str(rows[-1][0].sequence), request.parent) if more else ""),
    )


async def redeliver(
    store: Store, instance_id: str, request: pb.RedeliverParkedEventsRequest
) -> int:
    """Marks parked events for redelivery (all, or the sequences asked for); how many."""
    async with store.transaction() as session:
        if request.sequences:
            parked = await store_ops.parked_among(session, instance_id, request.sequences)
            missing = sorted(set(request.sequences) - parked)
            if missing:
                # Checked before the instance: an unknown instance is NOT_FOUND as well.
                await catalog.get_instance(session, instance_id)
                shown = ", ".join(str(s) for s in missing[:20])
                raise errors.NotFound(
                    f"{request.parent} has no parked event with sequence {shown}; "
                    "ListParkedEvents shows the parked ones",
                    reason="PARKED_EVENT_NOT_FOUND",
                )
        return await store_ops.mark_redeliver(session, instance_id, list(request.sequences))
