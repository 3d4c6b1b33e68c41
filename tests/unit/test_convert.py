"""The alert server's direct event builder gives exactly what the general path gives."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from alert_server import convert
from event_store.events import StoredEvent
from listener.v1 import event_pb2
from listener_common import events
from tests.support.samples import sample_event

PAYLOADS = [f.name for f in event_pb2.ListenerEvent.DESCRIPTOR.oneofs_by_name["payload"].fields]
PUBLISHED = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)


def _stored(event: event_pb2.ListenerEvent, sequence: int = 7) -> StoredEvent:
    which = event.WhichOneof("payload")
    assert which is not None
    number = event_pb2.EventType.Value("EVENT_TYPE_" + which.upper())
    return StoredEvent(
        sequence, f"id-{which}-{sequence}", number, PUBLISHED, event.SerializeToString()
    )


def _general(stored: StoredEvent) -> events.ListenerEvent:
    return events.from_dict(convert.to_sdk_dict(stored))


def _variants(payload: str) -> list[event_pb2.ListenerEvent]:
    full = sample_event(payload)
    sparse = event_pb2.ListenerEvent()
    getattr(sparse, payload).SetInParent()  # every payload field left at its default
    odd_times = sample_event(payload, 3)
    odd_times.event_time.seconds, odd_times.event_time.nanos = -86_400, 999_999_999
    for field in getattr(odd_times, payload).DESCRIPTOR.fields:
        if field.message_type is not None and field.message_type.full_name.endswith("Timestamp"):
            stamp = getattr(getattr(odd_times, payload), field.name)
            stamp.seconds, stamp.nanos = 253_402_300_799, 1_500
    return [full, sparse, odd_times]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_direct_builder_matches_the_general_path(payload: str) -> None:
    for i, event in enumerate(_variants(payload)):
        stored = _stored(event, 100 + i)
        assert convert._build(stored) == _general(stored), (payload, i)


def test_the_frequent_types_take_the_direct_path() -> None:
    direct = {convert._DIRECT[n].cls.type for n in convert._DIRECT}
    for kind in ("TASK_START", "TASK_END", "TASK_FAIL", "WORKFLOW_START", "WORKFLOW_FAIL"):
        assert events.EventType(kind) in direct
