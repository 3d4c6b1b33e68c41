"""The alert server's direct event builder gives exactly what the general path gives."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from alert_server import convert
from api_server.validation import MAX_SECONDS, MIN_SECONDS
from event_store.events import StoredEvent
from listener import event_types
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


# -- the generated builders, on edge values and random ones ----------------------------------

DIRECT_PAYLOADS = [event_types.PAYLOAD_FIELD[number] for number in convert._DIRECT]
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
#: (seconds, nanos) of timestamps the API server accepts, at their edges; None: unset.
STAMPS: list[tuple[int, int] | None] = [
    None,
    (0, 0),  # the epoch, set: reads as an unset timestamp does, yet is not one
    (0, 1),
    (MIN_SECONDS, 0),
    (MIN_SECONDS, 999_999_999),
    (MAX_SECONDS, 0),
    (MAX_SECONDS, 999_999_999),
    (-1, 0),
    (-1, 999_999_999),
    (-86_400, 500_000_000),
    (1_700_000_000, 999),  # nanos below a microsecond
    (1_700_000_000, 1_000),
]


def _assert_same(built: events.ListenerEvent, general: events.ListenerEvent) -> None:
    """Equal, and alike down to each value's type, tzinfo object and fold."""
    assert built == general
    assert type(built) is type(general)
    for field in dataclasses.fields(general):
        mine, theirs = getattr(built, field.name), getattr(general, field.name)
        assert type(mine) is type(theirs), field.name
        if isinstance(theirs, datetime):
            assert (mine.tzinfo, mine.fold) == (theirs.tzinfo, theirs.fold), field.name
            assert mine.tzinfo is theirs.tzinfo, field.name
    assert repr(built) == repr(general)


def _timestamps(message: Message) -> list[str]:
    return [
        f.name
        for f in message.DESCRIPTOR.fields
        if f.message_type is not None and f.message_type.full_name == "google.protobuf.Timestamp"
    ]


def _set_stamp(message: Message, field: str, stamp: tuple[int, int] | None) -> None:
    if stamp is None:
        message.ClearField(field)
    else:
        getattr(message, field).CopyFrom(Timestamp(seconds=stamp[0], nanos=stamp[1]))


@pytest.mark.parametrize("payload", DIRECT_PAYLOADS)
def test_generated_builders_match_the_general_path_on_edge_values(payload: str) -> None:
    for n, stamp in enumerate(STAMPS):
        for base in (sample_event(payload, n), event_pb2.ListenerEvent(source="")):
            event = event_pb2.ListenerEvent()
            event.CopyFrom(base)
            body = getattr(event, payload)
            body.SetInParent()
            _set_stamp(event, "event_time", stamp)
            for field in _timestamps(body):
                _set_stamp(body, field, stamp)
            for trace in (None, "", TRACE):
                stored = dataclasses.replace(_stored(event, 1_000 + n), traceparent=trace)
                _assert_same(convert._build(stored), _general(stored))


def _field_values(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.message_type is not None:  # a Timestamp, in the direct payloads
        stamps = st.tuples(
            st.integers(MIN_SECONDS, MAX_SECONDS),
            st.one_of(st.just(0), st.integers(0, 999_999_999)),
        )
        return st.one_of(st.none(), stamps)
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.text()
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    bits = 64 if field.cpp_type == FieldDescriptor.CPPTYPE_INT64 else 32
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


@st.composite
def _random_stored(draw: st.DrawFn, payload: str) -> StoredEvent:
    event = event_pb2.ListenerEvent(source=draw(st.text()))
    _set_stamp(event, "event_time", draw(_field_values(_EVENT_TIME)))
    body = getattr(event, payload)
    body.SetInParent()
    for field in body.DESCRIPTOR.fields:
        value = draw(_field_values(field))
        if field.message_type is not None:
            _set_stamp(body, field.name, value)
        else:
            setattr(body, field.name, value)
    trace = draw(st.one_of(st.none(), st.just(""), st.just(TRACE)))
    return dataclasses.replace(_stored(event, draw(st.integers(1, 2**62))), traceparent=trace)


_EVENT_TIME = event_pb2.ListenerEvent.DESCRIPTOR.fields_by_name["event_time"]


@pytest.mark.parametrize("payload", DIRECT_PAYLOADS)
def test_generated_builders_match_the_general_path_on_random_values(payload: str) -> None:
    @settings(max_examples=40, deadline=None, database=None)
    @given(_random_stored(payload))
    def check(stored: StoredEvent) -> None:
        _assert_same(convert._build(stored), _general(stored))

    check()


def test_every_direct_type_has_a_generated_builder_whose_source_is_inspectable() -> None:
    assert set(convert._BUILDERS) == set(convert._DIRECT)
    for number, direct in convert._DIRECT.items():
        builder = convert._BUILDERS[number]
        assert inspect.getsource(builder) == convert._builder_source(direct)
        assert builder.__doc__ and direct.cls.__name__ in builder.__doc__


def test_a_body_of_another_type_than_stored_takes_the_general_path() -> None:
    stored = _stored(sample_event("task_fail"))
    odd = dataclasses.replace(stored, type=event_pb2.EventType.Value("EVENT_TYPE_TASK_START"))
    built = convert._build(odd)
    _assert_same(built, _general(odd))
    assert isinstance(built, events.TaskStart)


def test_events_built_lately_are_shared_for_one_to_two_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(convert, "_CACHE_TURN", 3)
    monkeypatch.setattr(convert, "_recent", {})
    monkeypatch.setattr(convert, "_older", {})
    stored = [_stored(sample_event("task_fail", n), n) for n in range(1, 8)]
    first = convert.to_sdk_event(stored[0])
    assert convert.to_sdk_event(stored[0]) is first
    again = dataclasses.replace(stored[0], sequence=99)  # the same id read anew: not kept
    assert convert.to_sdk_event(again).sequence == 99
    for s in stored[1:3]:  # the turn: stored[0]'s event goes to the older half
        convert.to_sdk_event(s)
    assert convert.to_sdk_event(again) is convert.to_sdk_event(again)
    kept = convert.to_sdk_event(again)
    for s in stored[3:6]:  # a second turn: it is dropped
        convert.to_sdk_event(s)
    rebuilt = convert.to_sdk_event(again)
    assert rebuilt == kept and rebuilt is not kept
    assert len(convert._recent) + len(convert._older) <= 2 * 3
