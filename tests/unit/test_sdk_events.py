"""The SDK's typed events match the proto contract, and plugins get them dispatched right."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import threading
import typing
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from listener_common import ListenerPlugin, events
from listener_common.events import EVENT_CLASSES, EventType, ListenerEvent
from listener_common.plugin import deliver_batch, supports_batch

PROTO = Path(__file__).resolve().parents[2] / "protos" / "listener" / "v1" / "event.proto"
BASE_FIELDS = {"id", "sequence", "event_time", "publish_time", "source", "traceparent"}


def _proto() -> tuple[dict[str, list[tuple[str, str]]], dict[str, str], list[str]]:
    """Messages → [(type, field)], payload oneof field → message, and the enum's names."""
    text = re.sub(r"//[^\n]*", "", PROTO.read_text())
    messages: dict[str, list[tuple[str, str]]] = {}
    for name, body in re.findall(r"^message (\w+) \{(.*?)^\}", text, re.M | re.S):
        messages[name] = re.findall(r"^\s*(?:repeated\s+)?([\w.]+)\s+(\w+)\s*=", body, re.M)
    oneof = re.search(r"oneof payload \{(.*?)\}", text, re.S)
    assert oneof
    payloads = {field: msg for msg, field in re.findall(r"(\w+)\s+(\w+)\s*=\s*\d+;", oneof[1])}
    enum = re.search(r"enum EventType \{(.*?)\}", text, re.S)
    assert enum
    names = re.findall(r"EVENT_TYPE_(\w+)\s*=", enum[1])
    return messages, payloads, [n for n in names if n != "UNSPECIFIED"]


MESSAGES, PAYLOADS, ENUM_NAMES = _proto()
PROTO_TYPES: dict[str, Any] = {
    "int64": int,
    "int32": int,
    "string": str,
    "bool": bool,
    "google.protobuf.Timestamp": datetime | None,
    "TaskDefinition": list[events.TaskDefinition],
    "TaskRelation": list[events.TaskRelation],
}


def payload_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in BASE_FIELDS]


# -- the proto contract ------------------------------------------------------------------------


def test_proto_was_parsed() -> None:
    assert len(PAYLOADS) == 13
    assert {"ServerDown", "TaskRun", "TaskDefinition", "TaskRelation"} <= set(MESSAGES)
    assert ("int64", "task_instance_id") in MESSAGES["TaskRun"]


def test_common_fields_equal_the_proto_envelope() -> None:
    envelope = [name for _, name in MESSAGES["ListenerEvent"][:6]]
    assert envelope == ["id", "sequence", "type", "event_time", "publish_time", "source"]
    fields = [f.name for f in dataclasses.fields(ListenerEvent)]
    # The envelope, then the trace context the store keeps beside it (not a proto field).
    assert fields == [*(name for name in envelope if name != "type"), "traceparent"]
    assert typing.get_type_hints(ListenerEvent)["type"] == typing.ClassVar[EventType]


def test_event_types_are_the_proto_enum() -> None:
    assert [t.name for t in EventType] == ENUM_NAMES
    assert all(t.value == t.name and isinstance(t, str) for t in EventType)
    assert set(EVENT_CLASSES) == set(EventType)
    assert [cls.__name__ for cls in EVENT_CLASSES.values()] == [
        "".join(part.title() for part in name.split("_")) for name in ENUM_NAMES
    ]


@pytest.mark.parametrize("oneof_field", sorted(PAYLOADS))
def test_payload_fields_equal_the_proto_message(oneof_field: str) -> None:
    cls = EVENT_CLASSES[EventType(oneof_field.upper())]
    message = PAYLOADS[oneof_field]
    assert cls.payload_message == message
    proto = MESSAGES[message]
    renames = events.PAYLOAD_RENAMES.get(message, {})
    assert payload_fields(cls) == [renames.get(name, name) for _, name in proto]
    hints = typing.get_type_hints(cls)
    for proto_type, name in proto:
        assert hints[renames.get(name, name)] == PROTO_TYPES[proto_type], name


@pytest.mark.parametrize("cls", [events.TaskDefinition, events.TaskRelation])
def test_nested_values_equal_the_proto_message(cls: type) -> None:
    proto = MESSAGES[cls.__name__]
    assert [f.name for f in dataclasses.fields(cls)] == [name for _, name in proto]
    hints = typing.get_type_hints(cls)
    assert all(hints[name] == PROTO_TYPES[kind] for kind, name in proto)


def test_renames_only_resolve_clashes_with_common_fields() -> None:
    assert events.PAYLOAD_RENAMES == {
        "ServerDown": {"type": "server_type"},
        "WorkflowDefinitionChange": {"id": "definition_id"},
        "TaskDefinitionChange": {"id": "definition_id"},
    }
    for proto_name in {p for renames in events.PAYLOAD_RENAMES.values() for p in renames}:
        assert proto_name in BASE_FIELDS | {"type"}


def test_shared_payloads_share_one_base() -> None:
    assert issubclass(events.WorkflowFail, events.WorkflowRun)
    assert issubclass(events.TaskUpdate, events.TaskDefinitionChange)
    assert payload_fields(events.TaskStart) == payload_fields(events.TaskFail)


# -- from_dict / to_dict -----------------------------------------------------------------------

TASK_FAIL = {
    "id": "ev-1",
    "sequence": "42",
    "type": "EVENT_TYPE_TASK_FAIL",
    "event_time": "2024-01-02T03:04:05.123Z",
    "publish_time": "2024-01-02T03:04:06Z",
    "source": "master-1",
    "payload": {
        "project_code": "9007199254740993",
        "project_name": "demo",
        "workflow_instance_id": "7",
        "task_instance_id": "70013",
        "task_name": "load",
        "start_time": "2024-01-02T03:04:00.000001Z",
        "log_path": "/logs/70013.log",
        "added_in_a_later_version": {"x": 1},
    },
}


def test_from_dict_coerces_proto_json_values() -> None:
    event = events.from_dict(TASK_FAIL)
    assert type(event) is events.TaskFail
    assert event.type is EventType.TASK_FAIL and event.type == "TASK_FAIL"
    assert (event.id, event.sequence, event.source) == ("ev-1", 42, "master-1")
    assert isinstance(event, events.TaskFail)
    assert event.project_code == 9007199254740993  # int64 beyond a double's precision
    assert event.task_instance_id == 70013 and event.task_name == "load"
    assert event.event_time == datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)
    assert event.start_time == datetime(2024, 1, 2, 3, 4, 0, 1, tzinfo=UTC)
    assert event.end_time is None and event.owner == "" and event.task_code == 0
    assert not hasattr(event, "added_in_a_later_version")


def test_to_dict_is_flat_and_json_ready() -> None:
    out = events.from_dict(TASK_FAIL).to_dict()
    assert json.loads(json.dumps(out)) == out
    assert out == {
        "id": "ev-1",
        "sequence": 42,
        "type": "TASK_FAIL",
        "event_time": "2024-01-02T03:04:05.123Z",
        "publish_time": "2024-01-02T03:04:06Z",
        "source": "master-1",
        "project_code": 9007199254740993,
        "project_name": "demo",
        "owner": "",
        "workflow_instance_id": 7,
        "workflow_definition_code": 0,
        "workflow_name": "",
        "task_instance_id": 70013,
        "task_code": 0,
        "task_name": "load",
        "task_type": "",
        "task_state": "",
        "start_time": "2024-01-02T03:04:00.000001Z",
        "end_time": None,
        "host": "",
        "log_path": "/logs/70013.log",
    }
    assert type(out["type"]) is str


def test_nested_task_definitions_and_relations() -> None:
    event = events.from_dict(
        {
            "id": "w",
            "sequence": 3,
            "type": "WORKFLOW_ADDED",
            "payload": {
                "id": "12",
                "code": "34",
                "name": "etl",
                "task_definitions": [
                    {
                        "id": "1",
                        "code": "100",
                        "name": "extract",
                        "update_time": "2024-01-02T00:00:00Z",
                    },
                    {"name": "load", "unknown": True},
                ],
                "task_relations": [{"pre_task_code": "100", "post_task_version": 2}],
            },
        }
    )
    assert isinstance(event, events.WorkflowAdded)
    assert (event.id, event.definition_id, event.code, event.name) == ("w", 12, 34, "etl")
    assert event.task_definitions == [
        events.TaskDefinition(
            id=1, code=100, name="extract", update_time=datetime(2024, 1, 2, tzinfo=UTC)
        ),
        events.TaskDefinition(name="load"),
    ]
    assert event.task_relations == [events.TaskRelation(pre_task_code=100, post_task_version=2)]
    out = event.to_dict()
    assert out["definition_id"] == 12 and out["id"] == "w"
    assert out["task_definitions"][0]["update_time"] == "2024-01-02T00:00:00Z"
    assert out["task_relations"][0]["pre_task_code"] == 100
    assert json.loads(json.dumps(out)) == out


def test_server_down_keeps_the_event_type_and_the_server_role_apart() -> None:
    event = events.from_dict(
        {
            "id": "s",
            "sequence": 1,
            "type": "SERVER_DOWN",
            "payload": {"type": "WORKER", "host": "w1", "event": "removed"},
        }
    )
    assert isinstance(event, events.ServerDown)
    assert event.type is EventType.SERVER_DOWN
    assert (event.server_type, event.host, event.event) == ("WORKER", "w1", "removed")
    out = event.to_dict()
    assert out["type"] == "SERVER_DOWN" and out["server_type"] == "WORKER"


def test_missing_payload_fields_take_defaults() -> None:
    event = events.from_dict({"id": "r", "sequence": 5, "type": "WORKFLOW_START", "payload": {}})
    assert isinstance(event, events.WorkflowStart)
    assert (event.recovery, event.run_times, event.state, event.start_time) == (False, 0, "", None)
    assert event.event_time is None and event.publish_time is None and event.source == ""
    added = events.from_dict({"id": "a", "sequence": 6, "type": "WORKFLOW_ADDED", "payload": {}})
    assert isinstance(added, events.WorkflowAdded)
    assert added.task_definitions == [] and added.task_relations == []


def test_bool_and_camel_case_keys() -> None:
    event = events.from_dict(
        {
            "id": "r",
            "sequence": 5,
            "type": "WORKFLOW_FAIL",
            "payload": {"recovery": True, "runTimes": 3, "workflowInstanceId": "9"},
        }
    )
    assert isinstance(event, events.WorkflowFail)
    assert (event.recovery, event.run_times, event.workflow_instance_id) == (True, 3, 9)


def test_timestamps_become_utc_with_microseconds() -> None:
    event = events.from_dict(
        {
            "id": "t",
            "sequence": 1,
            "type": "TASK_START",
            "event_time": "2024-01-02T05:04:05.123456789+02:00",
            "publish_time": datetime(2024, 1, 2, 3, 4, 5),
        }
    )
    assert event.event_time == datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert event.event_time is not None and event.event_time.tzinfo is UTC
    assert event.publish_time == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    out = event.to_dict()
    assert out["event_time"] == "2024-01-02T03:04:05.123456Z"
    assert out["publish_time"] == "2024-01-02T03:04:05Z"
    local = events.TaskStart(
        id="x",
        sequence=1,
        event_time=datetime(2024, 1, 2, 4, 0, tzinfo=timezone(timedelta(hours=1))),
    )
    assert local.to_dict()["event_time"] == "2024-01-02T03:00:00Z"


@pytest.mark.parametrize("type_name", ["TASK_FAIL", "EVENT_TYPE_TASK_FAIL"])
def test_both_type_spellings(type_name: str) -> None:
    assert type(events.from_dict({"id": "x", "sequence": 1, "type": type_name})) is events.TaskFail


@pytest.mark.parametrize("bad", ["TASK_EXPLODED", "", "task_fail", None, 13])
def test_unknown_type_is_a_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        events.from_dict({"id": "x", "sequence": 1, "type": bad})


def test_malformed_values_are_value_errors_naming_the_field() -> None:
    with pytest.raises(ValueError, match="task_instance_id"):
        events.from_dict(
            {"id": "x", "sequence": 1, "type": "TASK_END", "payload": {"task_instance_id": "x"}}
        )
    with pytest.raises(ValueError, match="recovery"):
        events.from_dict(
            {"id": "x", "sequence": 1, "type": "WORKFLOW_END", "payload": {"recovery": "maybe"}}
        )
    with pytest.raises(ValueError, match="id and a sequence"):
        events.from_dict({"sequence": 1, "type": "TASK_END"})


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_type_round_trips_through_to_dict(event_type: EventType) -> None:
    cls = EVENT_CLASSES[event_type]
    hints = typing.get_type_hints(cls)
    samples = {int: 7, str: "text", bool: True, datetime | None: datetime(2024, 5, 6, tzinfo=UTC)}
    values: dict[str, Any] = {}
    for name in payload_fields(cls):
        hint = hints[name]
        if hint == list[events.TaskDefinition]:
            values[name] = [events.TaskDefinition(id=1, name="t")]
        elif hint == list[events.TaskRelation]:
            values[name] = [events.TaskRelation(pre_task_code=1)]
        else:
            values[name] = samples[hint]
    event = cls(id="e", sequence=9, event_time=datetime(2024, 1, 1, tzinfo=UTC), **values)
    assert event.type is event_type
    flat = json.loads(json.dumps(event.to_dict()))
    assert events.from_dict(flat) == event


def test_events_are_immutable() -> None:
    event = events.from_dict(TASK_FAIL)
    assert isinstance(event, events.TaskFail)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.task_name = "other"  # type: ignore[misc]


def test_handler_names() -> None:
    assert events.handler_name(EventType.TASK_FAIL) == "on_task_fail"
    assert events.handler_name("WORKFLOW_ADDED") == "on_workflow_added"
    assert events.handler_name("SERVER_DOWN") == "on_server_down"
    with pytest.raises(ValueError):
        events.handler_name("NOPE")


# -- dispatch ----------------------------------------------------------------------------------


def _event(event_type: EventType, sequence: int = 1) -> ListenerEvent:
    return events.from_dict({"id": f"e{sequence}", "sequence": sequence, "type": event_type})


class Recorder(ListenerPlugin):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bool]] = []

    async def on_task_fail(self, event: events.TaskFail) -> None:
        self.seen.append(("async", event.id, _on_loop_thread()))

    def on_workflow_start(self, event: events.WorkflowStart) -> None:  # type: ignore[override]
        self.seen.append(("sync", event.id, _on_loop_thread()))


_LOOP_THREAD: list[int] = []


def _on_loop_thread() -> bool:
    return threading.get_ident() in _LOOP_THREAD


@pytest.fixture(autouse=True)
def _remember_loop_thread() -> None:
    _LOOP_THREAD[:] = [threading.get_ident()]


def test_every_type_has_a_default_no_op_handler() -> None:
    plugin = ListenerPlugin()
    for event_type in EventType:
        handler = getattr(plugin, events.handler_name(event_type))
        assert asyncio.iscoroutinefunction(handler)
        assert asyncio.run(handler(_event(event_type))) is None
    assert ListenerPlugin.params() == []


async def test_on_event_dispatches_by_type_and_runs_plain_handlers_off_the_loop() -> None:
    plugin = Recorder()
    for n, event_type in enumerate(EventType):
        await plugin.on_event(_event(event_type, n))
    assert plugin.seen == [
        ("sync", f"e{list(EventType).index(EventType.WORKFLOW_START)}", False),
        ("async", f"e{list(EventType).index(EventType.TASK_FAIL)}", True),
    ]
    assert asyncio.iscoroutinefunction(Recorder.on_workflow_start)
    assert Recorder.on_workflow_start.__name__ == "on_workflow_start"


async def test_a_raising_handler_fails_the_event() -> None:
    class Failing(ListenerPlugin):
        def on_task_end(self, event: events.TaskEnd) -> None:  # type: ignore[override]
            raise RuntimeError("destination down")

    with pytest.raises(RuntimeError, match="destination down"):
        await Failing().on_event(_event(EventType.TASK_END))


async def test_deliver_batch_without_on_events_goes_one_by_one_in_order() -> None:
    plugin = Recorder()
    batch = [_event(EventType.TASK_FAIL, n) for n in (3, 4, 5)]
    assert not supports_batch(plugin)
    await deliver_batch(plugin, batch)
    assert [eid for _, eid, _ in plugin.seen] == ["e3", "e4", "e5"]


async def test_deliver_batch_stops_at_the_first_failure() -> None:
    class FailsOnFour(ListenerPlugin):
        def __init__(self) -> None:
            self.done: list[int] = []

        async def on_event(self, event: ListenerEvent) -> None:
            if event.sequence == 4:
                raise RuntimeError("four")
            self.done.append(event.sequence)

    plugin = FailsOnFour()
    with pytest.raises(RuntimeError, match="four"):
        await deliver_batch(plugin, [_event(EventType.TASK_FAIL, n) for n in (3, 4, 5)])
    assert plugin.done == [3]


async def test_deliver_batch_prefers_on_events_async_or_sync() -> None:
    class AsyncBatch(ListenerPlugin):
        def __init__(self) -> None:
            self.batches: list[list[str]] = []

        async def on_events(self, batch: Sequence[ListenerEvent]) -> None:
            self.batches.append([e.id for e in batch])

        async def on_event(self, event: ListenerEvent) -> None:
            raise AssertionError("on_events must be preferred")

    class SyncBatch(ListenerPlugin):
        def __init__(self) -> None:
            self.threads: list[bool] = []

        def on_events(self, batch: Sequence[ListenerEvent]) -> None:
            self.threads.append(_on_loop_thread())

    batch = [_event(EventType.TASK_START, n) for n in (1, 2)]
    first = AsyncBatch()
    assert supports_batch(first)
    await deliver_batch(first, batch)
    await deliver_batch(first, [])
    assert first.batches == [["e1", "e2"]]
    second = SyncBatch()
    assert supports_batch(second)
    await deliver_batch(second, batch)
    assert second.threads == [False]


async def test_sync_open_and_close_run_off_the_loop() -> None:
    class Blocking(ListenerPlugin):
        def open(self, config: dict[str, Any]) -> None:  # type: ignore[override]
            self.opened = (config, _on_loop_thread())

        def close(self) -> None:  # type: ignore[override]
            self.closed = _on_loop_thread()

    plugin = Blocking()
    # Awaitable at run time: the subclass hook wrapped the plain methods.
    await plugin.open({"a": 1})  # type: ignore[func-returns-value,misc]
    await plugin.close()  # type: ignore[func-returns-value,misc]
    assert plugin.opened == ({"a": 1}, False) and plugin.closed is False
