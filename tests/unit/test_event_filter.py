"""listener_core.event_filter on its own: the checks at compile time, the fields converted
for an expression, and the same answers from a projected event as from the whole one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from alert_server.filtering import choose
from event_store.events import StoredEvent
from listener.v1 import event_pb2
from listener_core.event_filter import (
    FilterError,
    FilterRuntimeError,
    compile_filter,
    context,
    event_view,
    stored_view,
)
from tests.support.samples import PAYLOAD_FIELDS, sample_event

TASK_FAIL, WORKFLOW_FAIL = 13, 7
ROW = ("id", "sequence", "type", "publish_time")


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
    macro = 'event.workflow_update.task_definitions.exists(t, t.name == "x")'
    assert compile_filter(macro, [3]) is not None  # the macro declares t
    with pytest.raises(FilterError, match="undeclared reference to 'u'"):
        compile_filter(macro.replace("t.name", "u.name"), [3])
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
        whole = compiled.matches(context(event_view(event)))
        assert compiled.matches(context(event_view(event, compiled.projection))) == whole


def test_a_missing_payload_is_a_run_time_error_naming_it() -> None:
    compiled = compile_filter('event.task_fail.project_name == "etl"', [TASK_FAIL, WORKFLOW_FAIL])
    assert compiled is not None
    event = sample_event("workflow_fail")
    with pytest.raises(FilterRuntimeError, match="no field 'task_fail' in this event"):
        compiled.matches(context(event_view(event, compiled.projection)))


def test_known_results_are_reused_by_the_values_read_and_errors_never_kept() -> None:
    compiled = compile_filter('event.task_fail.project_name == "etl"', [TASK_FAIL, WORKFLOW_FAIL])
    assert compiled is not None

    def stored(n: int, payload: str, project: str) -> StoredEvent:
        event = sample_event(payload, n)
        getattr(event, payload).project_name = project
        return StoredEvent(n, str(uuid.uuid4()), 13, datetime.now(UTC), event.SerializeToString())

    seen = [stored(1, "task_fail", "etl"), stored(2, "task_fail", "web")]
    seen.append(stored(3, "task_fail", "etl"))
    choice = choose(compiled, seen, 0)
    assert choice.chosen == [seen[0], seen[2]] and choice.through == 3 and choice.failed is None
    assert len(compiled.results) == 2  # "etl" and "web": the third event was known
    again = choose(compiled, seen[1:], 1)  # another instance's batch: the same answers
    assert again.chosen == [seen[2]] and len(compiled.results) == 2
    bad = stored(4, "workflow_fail", "etl")
    for _ in range(2):
        failed = choose(compiled, [*seen, bad], 0)
        assert failed.failed is bad and failed.through == 3 and failed.chosen == choice.chosen
        assert "no field 'task_fail' in this event" in failed.error
    assert len(compiled.results) == 2


def test_filters_reading_the_same_fields_share_the_converted_event() -> None:
    one = compile_filter('event.task_fail.project_name == "etl"', [TASK_FAIL])
    two = compile_filter('event.task_fail.project_name != "web"', [TASK_FAIL])
    other = compile_filter('event.task_fail.host == ""', [TASK_FAIL])
    assert one is not None and two is not None and other is not None
    assert one.reads is two.reads and one.reads is not other.reads
    event = sample_event("task_fail", 1)
    rows = [
        StoredEvent(n, str(uuid.uuid4()), TASK_FAIL, datetime.now(UTC), event.SerializeToString())
        for n in (1, 2)
    ]
    first, second = one.reads.of(rows)
    assert first is second  # the same values: one object, one call into the library per filter
    assert two.reads.of(rows) is one.reads.of(rows)  # the same batch: answered as a whole
    assert two.reads.of(list(rows)) == [first, second]
    rows.append(rows[0])  # (a batch is never changed; if it were, it is not mistaken)
    assert one.reads.of(rows) == [first, second, first]
    assert first.view == {"task_fail": {"project_name": event.task_fail.project_name}}
    whole = stored_view(rows[0])
    assert whole["id"] == rows[0].id and whole["sequence"] == 1 and whole["type"] == TASK_FAIL
    assert whole["publish_time"] == rows[0].publish_time
    assert whole == {**event_view(event), **{k: whole[k] for k in ROW}}


CHOSEN_BY = [
    *EXPRESSIONS,
    'has(event.task_fail) && event.task_fail.project_name == "p1"',
    "event.sequence % 3 == 0 && event.type == 13",
    'event.type == 13 && event.task_fail.host == "" && event.task_fail.end_time == '
    "event.event_time",
    "event.publish_time > timestamp('2020-01-01T00:00:00Z') && event.source.endsWith('2')",
    'has(event.workflow_update) && event.workflow_update.task_definitions.exists(t, t.name == "x")',
]


@pytest.mark.parametrize("text", CHOSEN_BY)
def test_batches_choose_as_each_event_evaluated_whole(text: str) -> None:
    """The events of a batch, through the shared conversion and the known results, are
    chosen exactly as evaluating the expression on each whole event says."""

    compiled = compile_filter(text, [])
    assert compiled is not None
    batch = []
    for n in range(60):
        payload = PAYLOAD_FIELDS[n % len(PAYLOAD_FIELDS)] if n % 2 else "task_fail"
        event = sample_event(payload, n % 4)
        event.source = f"master-{n % 3}"
        body = getattr(event, payload)
        if payload == "task_fail":
            body.project_name = f"p{n % 3}"
            body.host = "" if n % 4 else "worker-1"
            body.end_time.CopyFrom(event.event_time if n % 5 else body.start_time)
        if payload == "workflow_update":
            body.task_definitions[0].name = "x" if n % 3 else "y"
        kind = event_pb2.EventType.Value(f"EVENT_TYPE_{payload.upper()}")
        when = datetime(2026, 1, 1 + n % 2, tzinfo=UTC)
        batch.append(StoredEvent(100 + n, str(uuid.uuid4()), kind, when, event.SerializeToString()))
    for start in (0, 7, 30, 0):  # runners at different places share what is known
        chosen, failed = [], None
        for stored in batch[start:]:
            try:
                if compiled.matches(context(stored_view(stored))):
                    chosen.append(stored)
            except FilterRuntimeError:
                failed = stored
                break
        choice = choose(compiled, batch[start:], 99 + start)
        assert choice.chosen == chosen and choice.failed is failed


def _stored(event: event_pb2.ListenerEvent, sequence: int = 1) -> StoredEvent:
    payload = event.WhichOneof("payload") or "server_down"
    kind = event_pb2.EventType.Value(f"EVENT_TYPE_{payload.upper()}")
    return StoredEvent(
        sequence, str(uuid.uuid4()), kind, datetime.now(UTC), event.SerializeToString()
    )


def _task(**fields: object) -> event_pb2.ListenerEvent:
    event = sample_event("task_fail", 1)
    for name, value in fields.items():
        if name == "event_time":
            event.ClearField("event_time")
        else:
            setattr(event.task_fail, name, value)
    return event


T, F = True, False
PRESENCE = [
    # expression, a task event with the field set, one with it at its default, and whether
    # each is selected, then a workflow event
    ("has(event.task_fail.host)", _task(host="worker-1"), _task(host=""), T, F, F),
    ("has(event.task_fail.project_code)", _task(project_code=7), _task(project_code=0), T, F, F),
    ("has( event . task_fail . task_type )", _task(task_type="SQL"), _task(task_type=""), T, F, F),
    ("!has(event.task_fail.host)", _task(host="w"), _task(host=""), F, T, T),
    ("has(event.event_time)", _task(), _task(event_time=None), T, F, T),
    ("has(event.task_fail)", _task(host=""), _task(), T, T, F),
    (
        'has(event.task_fail.host) || event.source == "has(event.task_fail.host)"',
        *[_task(host="w"), _task(host=""), T, F, F],
    ),
]


@pytest.mark.parametrize(("text", "is_set", "default", "yes", "no", "other"), PRESENCE)
def test_has_on_a_field_is_true_when_it_is_set_as_in_cels_proto3_semantics(
    text: str,
    is_set: event_pb2.ListenerEvent,
    default: event_pb2.ListenerEvent,
    yes: bool,
    no: bool,
    other: bool,
) -> None:
    """A field without presence (string, number, bool, enum, list) is set when it is not
    its default; a timestamp when it is not unset; a payload when the event carries it, also
    on the way to one of its fields (false on another payload, not an error)."""
    compiled = compile_filter(text, [TASK_FAIL, WORKFLOW_FAIL])
    assert compiled is not None and compiled.text == text
    workflow = _stored(sample_event("workflow_fail", 1), 3)
    batch = [_stored(is_set, 1), _stored(default, 2), workflow]
    choice = choose(compiled, batch, 0)
    assert choice.failed is None, choice.error
    assert [e in choice.chosen for e in batch] == [yes, no, other]


def test_has_on_lists_and_bools_and_where_the_librarys_own_applies() -> None:
    change = sample_event("workflow_update", 1)
    empty = sample_event("workflow_update", 2)
    del empty.workflow_update.task_definitions[:]
    batch = [_stored(change, 1), _stored(empty, 2)]
    lists = compile_filter("has(event.workflow_update.task_definitions)", [3])
    assert lists is not None
    assert choose(lists, batch, 0).chosen == batch[:1]
    # Inside a macro, has() on its variable asks the library: every field is there.
    inner = compile_filter(
        "event.workflow_update.task_definitions.exists(t, has(t.description))", [3]
    )
    assert inner is not None and choose(inner, batch, 0).chosen == batch[:1]
    run = sample_event("workflow_fail", 1)
    run.workflow_fail.recovery = True
    flags = compile_filter("has(event.workflow_fail.recovery)", [WORKFLOW_FAIL])
    assert flags is not None
    rows = [_stored(run, 1), _stored(sample_event("workflow_fail", 2), 2)]
    assert choose(flags, rows, 0).chosen == rows[:1]
    with pytest.raises(FilterError, match="TaskRun has no field 'hots'"):
        compile_filter("has(event.task_fail.hots)", [TASK_FAIL])
