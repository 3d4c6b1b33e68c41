"""prepare() on its own (the validator normally runs first): each refusal's message, reason
and field, and the body it stores equal to the completed event's serialization."""

from __future__ import annotations

import pytest

from api_server.event_service import prepare
from bench.scenarios import sample_event
from listener.v1 import event_pb2
from listener_core import errors


@pytest.mark.parametrize(
    ("given", "message", "reason"),
    [
        (99, "events[3].type: unknown event type 99", "UNKNOWN_EVENT_TYPE"),
        (
            event_pb2.EVENT_TYPE_TASK_START,
            "events[3].type is EVENT_TYPE_TASK_START but the payload is task_fail",
            "TYPE_MISMATCH",
        ),
    ],
)
def test_a_wrong_type_is_refused_by_name(given: int, message: str, reason: str) -> None:
    event = sample_event()
    event.type = given  # type: ignore[assignment]
    with pytest.raises(errors.InvalidArgument) as caught:
        prepare(event, "events", 3)
    assert (caught.value.message, caught.value.reason) == (message, reason)
    [(field, _)] = caught.value.field_violations
    assert field == "events[3].type"


@pytest.mark.parametrize("given", [0, event_pb2.EVENT_TYPE_TASK_FAIL])
def test_the_body_is_the_completed_event(given: int) -> None:
    event = sample_event()
    event.type = given  # type: ignore[assignment]
    expected = sample_event()
    expected.type = event_pb2.EVENT_TYPE_TASK_FAIL
    assert prepare(event, "event") == (
        event_pb2.EVENT_TYPE_TASK_FAIL,
        expected.SerializeToString(),
    )
    assert event == expected
