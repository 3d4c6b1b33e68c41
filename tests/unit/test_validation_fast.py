"""The compiled fast pass of the request checks agrees with the walk on every rule an event
can break: each timestamp of each payload type (nested ones too), the type, the source, and
the event's own times, at any index of a batch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from api_server import validation
from api_server.validation_plan import MAX_SECONDS
from bench.scenarios import sample_event
from listener.v1 import event_pb2, event_service_pb2

PAYLOADS = [f.name for f in event_pb2.ListenerEvent.DESCRIPTOR.oneofs_by_name["payload"].fields]


def _timestamp_paths(desc: Any, prefix: str, depth: int = 0) -> Iterator[str]:
    """Every Timestamp field below ``desc`` (a repeated message's first item)."""
    for fd in desc.fields:
        sub = fd.message_type
        if sub is None or depth > 3:
            continue
        path = f"{prefix}.{fd.name}" + ("[0]" if fd.is_repeated else "")
        if sub.full_name == "google.protobuf.Timestamp":
            yield path
        else:
            yield from _timestamp_paths(sub, path, depth + 1)


def _target(message: Any, path: str) -> Any:
    for part in path.split("."):
        name, _, index = part.partition("[")
        value = getattr(message, name)
        if index:
            value = value[0] if len(value) else value.add()
        message = value
    return message


def _cases() -> Iterator[tuple[str, str]]:
    for payload in PAYLOADS:
        desc = event_pb2.ListenerEvent.DESCRIPTOR.fields_by_name[payload].message_type
        for path in _timestamp_paths(desc, payload):
            yield payload, path
    yield "task_fail", "event_time"
    yield "task_fail", "publish_time"


def _request(payload: str, bad_index: int = 2) -> event_service_pb2.PublishEventsRequest:
    request = event_service_pb2.PublishEventsRequest(request_id="r")
    for n in range(3):
        event = request.events.add()
        event.CopyFrom(sample_event(n))
        if n == bad_index:
            event.ClearField("task_fail")
            getattr(event, payload).SetInParent()
    return request


def _verdicts(request: Any) -> tuple[bool, list[str]]:
    walked: list[validation.Violation] = []
    validation._walk(request, "", False, walked)
    return validation._fast(request.DESCRIPTOR, False)(request), [v.field for v in walked]


@pytest.mark.parametrize(("payload", "path"), list(_cases()))
@pytest.mark.parametrize("part", ["seconds", "nanos"])
def test_a_timestamp_out_of_range_fails_both_passes(payload: str, path: str, part: str) -> None:
    request = _request(payload)
    assert _verdicts(request) == (True, [])
    setattr(_target(request.events[2], path), part, MAX_SECONDS + 1 if part == "seconds" else -1)
    assert _verdicts(request) == (False, [f"events[2].{path}"])


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [("type", 99, "events[1].type"), ("source", "s" * 256, "events[1].source")],
)
def test_the_type_and_the_source_fail_both_passes(field: str, value: Any, named: str) -> None:
    request = _request("task_fail")
    setattr(request.events[1], field, value)
    assert _verdicts(request) == (False, [named])
    setattr(request.events[1], field, type(value)())
    request.request_id = "r" * 129
    assert _verdicts(request) == (False, ["request_id"])


def test_every_payload_type_passes_when_valid() -> None:
    for payload in PAYLOADS:
        assert _verdicts(_request(payload)) == (True, []), payload
