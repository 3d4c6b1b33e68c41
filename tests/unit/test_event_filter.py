"""listener_core.event_filter on its own: the checks at compile time, the fields converted
for an expression, and the same answers from a projected event as from the whole one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from listener.v1 import event_pb2
from listener_core.event_filter import (
    FilterError,
    FilterRuntimeError,
    _context,
    compile_filter,
    event_view,
)
from tests.support.samples import PAYLOAD_FIELDS, sample_event

TASK_FAIL, WORKFLOW_FAIL = 13, 7


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("event.task_fail.task_name ==", ["line 1, column 29", "Syntax error"]),
        (
            'event.task_fail.tsk_name == "x"',
            ["line 1, column 17", "TaskRun has no field 'tsk_name'"],
        ),
        ('true &&\n  event.nope == "x"', ["line 2, column 9", "ListenerEvent has no field 'nope'"]),
        ("evnt.source == 'x'", ["line 1, column 1", "undeclared reference to 'evnt'"]),
        ("shout(event.source)", ["unknown function 'shout'"]),
        ("event.type + 1", ["must yield a bool", "int"]),
        ("event.type == 'x' || event.source - 1 > 0", ["type error"]),
        ("x" * 3000, ["longer than 2048"]),
    ],
)
def test_bad_expressions_name_the_place_and_the_reason(text: str, words: list[str]) -> None:
    with pytest.raises(FilterError) as caught:
        compile_filter(text, [TASK_FAIL])
    for word in words:
        assert word in str(caught.value)


def test_paths_inside_strings_and_after_values_are_not_fields() -> None:
    assert compile_filter('event.source == "event.nope"', [TASK_FAIL]) is not None
    assert compile_filter("event.event_time.getHours() > 3", [TASK_FAIL]) is not None
    assert compile_filter("size(event.workflow_update.task_definitions) > 0", [3]) is not None
    assert compile_filter("", [TASK_FAIL]) is None and compile_filter("  ", []) is None


@pytest.mark.parametrize(
    ("text", "projection"),
    [
        ('event.task_fail.project_name == "etl"', {"task_fail": {"project_name": None}}),
        ("has(event.task_fail) && event.type == 13", {"task_fail": {}, "type": None}),
        ("has(event.task_fail) && event.task_fail == event.task_fail", {"task_fail": None}),
        ("event.event_time > timestamp('2020-01-01T00:00:00Z')", {"event_time": None}),
        ("event == event", None),
    ],
)
def test_only_the_fields_read_are_converted(text: str, projection: object) -> None:
    compiled = compile_filter(text, [TASK_FAIL])
    assert compiled is not None and compiled.projection == projection


EXPRESSIONS = [
    'has(event.task_fail) && event.task_fail.project_name == "etl"',
    '(has(event.workflow_fail) ? event.workflow_fail.workflow_name : "") == "wf-3"',
    "event.type in [7, 13] && event.source.startsWith('master')",
    "event.event_time > timestamp('2023-11-14T22:13:21Z')",
    "has(event.workflow_update) && size(event.workflow_update.task_definitions) == 1",
    "!has(event.server_down) || event.server_down.host.endsWith(':1234')",
]


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_a_projected_event_answers_as_the_whole_one(text: str) -> None:
    compiled = compile_filter(text, [])
    assert compiled is not None
    for n, payload in enumerate(PAYLOAD_FIELDS):
        event = sample_event(payload, n)
        event.type = event_pb2.EventType.Value(f"EVENT_TYPE_{payload.upper()}")
        whole = compiled.matches(_context(event_view(event)))
        assert compiled.matches(_context(event_view(event, compiled.projection))) == whole


def test_a_missing_payload_is_a_run_time_error_naming_it() -> None:
    compiled = compile_filter('event.task_fail.project_name == "etl"', [TASK_FAIL, WORKFLOW_FAIL])
    assert compiled is not None
    event = sample_event("workflow_fail")
    with pytest.raises(FilterRuntimeError, match="no field 'task_fail' in this event"):
        compiled.matches(_context(event_view(event, compiled.projection)))


def test_known_results_are_reused_by_the_values_read_and_errors_never_kept() -> None:
    compiled = compile_filter('event.task_fail.project_name == "etl"', [TASK_FAIL, WORKFLOW_FAIL])
    assert compiled is not None
    from alert_server.filtering import _message
    from event_store.events import StoredEvent
    from listener_core.event_filter import cached_context

    def stored(n: int, payload: str, project: str) -> StoredEvent:
        event = sample_event(payload, n)
        getattr(event, payload).project_name = project
        return StoredEvent(
            10_000_000 + n, f"memo-{n}", 13, datetime.now(UTC), event.SerializeToString()
        )

    seen = [
        stored(1, "task_fail", "etl"),
        stored(2, "task_fail", "web"),
        stored(3, "task_fail", "etl"),
    ]
    answers = [
        compiled.selects(cached_context(compiled, e.sequence, e.id, _message, e)) for e in seen
    ]
    assert answers == [True, False, True]
    assert len(compiled.results) == 2  # "etl" and "web": the third event was known
    bad = stored(4, "workflow_fail", "etl")
    for _ in range(2):
        with pytest.raises(FilterRuntimeError):
            compiled.selects(cached_context(compiled, bad.sequence, bad.id, _message, bad))
