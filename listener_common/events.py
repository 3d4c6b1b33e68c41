"""Typed listener events: what a plugin's handlers receive.

One frozen dataclass per DolphinScheduler event type. Its payload attributes are the fields of
the matching ``listener.v1`` payload message (``protos/listener/v1/event.proto``), with two
renames where a payload field would clash with an attribute every event has:

* ``ServerDown.type`` (the server role) is ``server_type``: ``type`` is the event type.
* ``WorkflowDefinitionChange.id`` and ``TaskDefinitionChange.id`` (the definition's row id) are
  ``definition_id``: ``id`` is the event id plugins de-duplicate on.

Events are built from plain dicts (:func:`from_dict`) rather than protobuf messages so that
plugins never depend on protobuf; the coercion tables are computed once at import because
:func:`from_dict` runs for every delivered event.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

__all__ = [
    "EVENT_CLASSES",
    "PAYLOAD_RENAMES",
    "EventType",
    "ListenerEvent",
    "ServerDown",
    "TaskAdded",
    "TaskDefinition",
    "TaskDefinitionChange",
    "TaskEnd",
    "TaskFail",
    "TaskRelation",
    "TaskRemoved",
    "TaskRun",
    "TaskStart",
    "TaskUpdate",
    "WorkflowAdded",
    "WorkflowDefinitionChange",
    "WorkflowEnd",
    "WorkflowFail",
    "WorkflowRemoved",
    "WorkflowRun",
    "WorkflowStart",
    "WorkflowUpdate",
    "from_dict",
    "handler_name",
]


class EventType(StrEnum):
    """The 13 DolphinScheduler listener event types; each value is its name."""

    SERVER_DOWN = "SERVER_DOWN"
    WORKFLOW_ADDED = "WORKFLOW_ADDED"
    WORKFLOW_UPDATE = "WORKFLOW_UPDATE"
    WORKFLOW_REMOVED = "WORKFLOW_REMOVED"
    WORKFLOW_START = "WORKFLOW_START"
    WORKFLOW_END = "WORKFLOW_END"
    WORKFLOW_FAIL = "WORKFLOW_FAIL"
    TASK_ADDED = "TASK_ADDED"
    TASK_UPDATE = "TASK_UPDATE"
    TASK_REMOVED = "TASK_REMOVED"
    TASK_START = "TASK_START"
    TASK_END = "TASK_END"
    TASK_FAIL = "TASK_FAIL"


def handler_name(event_type: EventType | str) -> str:
    """The plugin method for an event type: ``TASK_FAIL`` → ``on_task_fail``."""
    return "on_" + EventType(event_type).value.lower()


# -- value coercion ---------------------------------------------------------------------------
# protobuf's JSON mapping sends int64 as strings and timestamps as RFC 3339 text; these turn
# such values (or already-typed ones) into the declared Python types.

_Coerce = Callable[[Any], Any]


def _to_int(value: Any) -> int:
    return value if type(value) is int else int(value)


def _to_str(value: Any) -> str:
    return value if type(value) is str else str(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0", ""):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    return bool(value)


def _to_datetime(value: Any) -> datetime | None:
    """RFC 3339 text or a datetime → an aware UTC datetime; naive values are taken as UTC."""
    if value is None or value == "":
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if when.tzinfo is UTC:
        return when
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def _format_time(when: datetime | None) -> str | None:
    """RFC 3339 with ``Z``, and 0, 3 or 6 fractional digits as protobuf's JSON mapping writes."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    elif when.tzinfo is not UTC:
        when = when.astimezone(UTC)
    micro = when.microsecond
    spec = "seconds" if micro == 0 else "milliseconds" if micro % 1000 == 0 else "microseconds"
    return when.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class _Tables:
    """Per-class precomputed coercion and serialization steps (built once, at import)."""

    __slots__ = ("dump", "flat", "payload")

    def __init__(self, cls: type, skip: frozenset[str], renames: Mapping[str, str]) -> None:
        hints = typing.get_type_hints(cls)
        attr_to_proto = {attr: proto for proto, attr in renames.items()}
        self.payload: dict[str, tuple[str, _Coerce]] = {}
        self.flat: dict[str, tuple[str, _Coerce]] = {}
        dump: list[tuple[str, Callable[[Any], Any] | None]] = []
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            coerce, dumper = _steps_for(hints[f.name])
            proto = attr_to_proto.get(f.name, f.name)
            # Payload dicts may use proto names or their JSON (lowerCamel) names; the renamed
            # attribute name is accepted too unless it collides with a proto name.
            for key in (proto, _camel(proto), f.name):
                self.payload.setdefault(key, (f.name, coerce))
            self.flat[f.name] = (f.name, coerce)
            dump.append((f.name, dumper))
        self.dump = tuple(dump)


def _steps_for(hint: Any) -> tuple[_Coerce, Callable[[Any], Any] | None]:
    """The coercion and serialization for one declared field type."""
    if hint is int:
        return _to_int, None
    if hint is str:
        return _to_str, None
    if hint is bool:
        return _to_bool, None
    if hint == (datetime | None):
        return _to_datetime, _format_time
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return _list_of(item), _dump_list
    raise TypeError(f"no coercion for field type {hint!r}")


def _list_of(cls: Any) -> _Coerce:
    def coerce(items: Any) -> list[Any]:
        return [item if isinstance(item, cls) else cls.from_dict(item) for item in items]

    return coerce


def _dump_list(items: list[Any]) -> list[dict[str, Any]]:
    return [item.to_dict() for item in items]


def _pick(table: Mapping[str, tuple[str, _Coerce]], data: Mapping[str, Any]) -> dict[str, Any]:
    """Known keys of ``data``, coerced; unknown ones are ignored (newer publishers)."""
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        step = table.get(key)
        if step is not None and value is not None:
            try:
                kwargs[step[0]] = step[1](value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"field {key!r}: {exc}") from None
    return kwargs


def _dump(obj: Any, steps: tuple[tuple[str, Callable[[Any], Any] | None], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, dumper in steps:
        value = getattr(obj, name)
        out[name] = value if dumper is None else dumper(value)
    return out


# -- nested payload values --------------------------------------------------------------------


class _Nested:
    """Shared ``from_dict``/``to_dict`` for the small value classes inside payloads."""

    __slots__ = ()
    _tables: ClassVar[_Tables]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Builds the value from proto-style dict fields; unknown keys are ignored."""
        return cls(**_pick(cls._tables.payload, data))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (timestamps as RFC 3339 text)."""
        return _dump(self, self._tables.dump)


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskDefinition(_Nested):
    """A task definition as DolphinScheduler stores it (proto ``TaskDefinition``)."""

    id: int = 0
    code: int = 0
    name: str = ""
    version: int = 0
    description: str = ""
    project_code: int = 0
    user: str = ""
    task_type: str = ""
    task_params: str = ""
    flag: str = ""
    task_priority: str = ""
    worker_group: str = ""
    environment_code: int = 0
    fail_retry_times: int = 0
    fail_retry_interval: int = 0
    timeout_flag: str = ""
    timeout_notify_strategy: str = ""
    timeout: int = 0
    delay_time: int = 0
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskRelation(_Nested):
    """An edge of a workflow's task graph (proto ``TaskRelation``)."""

    project_code: int = 0
    workflow_definition_code: int = 0
    workflow_definition_version: int = 0
    pre_task_code: int = 0
    pre_task_version: int = 0
    post_task_code: int = 0
    post_task_version: int = 0
    condition_type: str = ""
    condition_params: str = ""


# -- events -----------------------------------------------------------------------------------

_BASE_FIELDS = frozenset({"id", "sequence", "event_time", "publish_time", "source", "traceparent"})


@dataclass(frozen=True, kw_only=True, slots=True)
class ListenerEvent:
    """Fields every event has; subclasses add one payload message's fields.

    ``id`` is stable across redeliveries (delivery is at least once: de-duplicate on it),
    ``sequence`` is the event's position in the log, ``type`` a class constant.
    ``traceparent`` (SDK 1.2) is the W3C trace context of the publish that stored the event
    when the servers trace (OpenTelemetry), else ``""``: send it on as the destination's
    ``traceparent`` header so consumers continue the publisher's trace.
    """

    type: ClassVar[EventType]
    #: Name of the proto payload message whose fields the subclass carries.
    payload_message: ClassVar[str]
    #: Proto field name → attribute name, where the two differ.
    payload_renames: ClassVar[Mapping[str, str]] = {}
    _tables: ClassVar[_Tables]

    id: str
    sequence: int
    event_time: datetime | None = None
    publish_time: datetime | None = None
    source: str = ""
    traceparent: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the common fields (``traceparent`` only when there is one), then
        the payload's fields flat at top level."""
        out: dict[str, Any] = {
            "id": self.id,
            "sequence": self.sequence,
            "type": self.type.value,
            "event_time": _format_time(self.event_time),
            "publish_time": _format_time(self.publish_time),
            "source": self.source,
        }
        if self.traceparent:
            out["traceparent"] = self.traceparent
        out.update(_dump(self, self._tables.dump))
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerDown(ListenerEvent):
    """A master or worker server went down (proto ``ServerDown``; ``type`` → ``server_type``)."""

    type = EventType.SERVER_DOWN
    payload_message = "ServerDown"
    payload_renames = {"type": "server_type"}

    server_type: str = ""
    host: str = ""
    event: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkflowDefinitionChange(ListenerEvent):
    """Base of WorkflowAdded/WorkflowUpdate: the definition (``id`` → ``definition_id``)."""

    payload_message = "WorkflowDefinitionChange"
    payload_renames = {"id": "definition_id"}

    definition_id: int = 0
    code: int = 0
    name: str = ""
    version: int = 0
    release_state: str = ""
    project_code: int = 0
    project_name: str = ""
    description: str = ""
    global_params: str = ""
    user: str = ""
    timeout: int = 0
    execution_type: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None
    task_definitions: list[TaskDefinition] = field(default_factory=list)
    task_relations: list[TaskRelation] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkflowAdded(WorkflowDefinitionChange):
    """A workflow definition was created."""

    type = EventType.WORKFLOW_ADDED


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkflowUpdate(WorkflowDefinitionChange):
    """A workflow definition was changed."""

    type = EventType.WORKFLOW_UPDATE


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkflowRemoved(ListenerEvent):
    """A workflow definition was deleted (proto ``WorkflowRemoved``)."""

    type = EventType.WORKFLOW_REMOVED
    payload_message = "WorkflowRemoved"

    project_code: int = 0
    project_name: str = ""
    owner: str = ""
    workflow_definition_code: int = 0
    workflow_name: str = ""
    delete_time: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkflowRun(ListenerEvent):
    """Base of WorkflowStart/WorkflowEnd/WorkflowFail: one workflow instance's run."""

    payload_message = "WorkflowRun"

    project_code: int = 0
    project_name: str = ""
    owner: str = ""
    workflow_instance_id: int = 0
    workflow_definition_code: int = 0
    workflow_name: str = ""
    command_type: str = ""
    state: str = ""
    run_times: int = 0
    recovery: bool = False
    start_time: datetime | None = None
    end_time: datetime | None = None
    host: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkflowStart(WorkflowRun):
    """A workflow instance started."""

    type = EventType.WORKFLOW_START


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkflowEnd(WorkflowRun):
    """A workflow instance finished successfully."""

    type = EventType.WORKFLOW_END


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkflowFail(WorkflowRun):
    """A workflow instance failed."""

    type = EventType.WORKFLOW_FAIL


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskDefinitionChange(ListenerEvent):
    """Base of TaskAdded/TaskUpdate: the definition (``id`` → ``definition_id``)."""

    payload_message = "TaskDefinitionChange"
    payload_renames = {"id": "definition_id"}

    definition_id: int = 0
    code: int = 0
    name: str = ""
    version: int = 0
    description: str = ""
    project_code: int = 0
    project_name: str = ""
    user: str = ""
    task_type: str = ""
    task_params: str = ""
    flag: str = ""
    task_priority: str = ""
    worker_group: str = ""
    environment_code: int = 0
    fail_retry_times: int = 0
    fail_retry_interval: int = 0
    timeout_flag: str = ""
    timeout_notify_strategy: str = ""
    timeout: int = 0
    delay_time: int = 0
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskAdded(TaskDefinitionChange):
    """A task definition was created."""

    type = EventType.TASK_ADDED


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskUpdate(TaskDefinitionChange):
    """A task definition was changed."""

    type = EventType.TASK_UPDATE


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskRemoved(ListenerEvent):
    """A task definition was deleted (proto ``TaskRemoved``)."""

    type = EventType.TASK_REMOVED
    payload_message = "TaskRemoved"

    task_code: int = 0
    task_name: str = ""
    task_type: str = ""
    project_code: int = 0
    project_name: str = ""
    delete_time: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskRun(ListenerEvent):
    """Base of TaskStart/TaskEnd/TaskFail: one task instance's run."""

    payload_message = "TaskRun"

    project_code: int = 0
    project_name: str = ""
    owner: str = ""
    workflow_instance_id: int = 0
    workflow_definition_code: int = 0
    workflow_name: str = ""
    task_instance_id: int = 0
    task_code: int = 0
    task_name: str = ""
    task_type: str = ""
    task_state: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    host: str = ""
    log_path: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskStart(TaskRun):
    """A task instance started."""

    type = EventType.TASK_START


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskEnd(TaskRun):
    """A task instance finished successfully."""

    type = EventType.TASK_END


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskFail(TaskRun):
    """A task instance failed."""

    type = EventType.TASK_FAIL


EVENT_CLASSES: dict[EventType, type[ListenerEvent]] = {
    cls.type: cls
    for cls in (
        ServerDown,
        WorkflowAdded,
        WorkflowUpdate,
        WorkflowRemoved,
        WorkflowStart,
        WorkflowEnd,
        WorkflowFail,
        TaskAdded,
        TaskUpdate,
        TaskRemoved,
        TaskStart,
        TaskEnd,
        TaskFail,
    )
}

#: Proto payload message → {proto field: SDK attribute} for the fields the SDK renames.
PAYLOAD_RENAMES: dict[str, dict[str, str]] = {
    cls.payload_message: dict(cls.payload_renames)
    for cls in EVENT_CLASSES.values()
    if cls.payload_renames
}

TaskDefinition._tables = _Tables(TaskDefinition, frozenset(), {})
TaskRelation._tables = _Tables(TaskRelation, frozenset(), {})
_BASES: tuple[type[ListenerEvent], ...] = (
    WorkflowDefinitionChange,
    WorkflowRun,
    TaskDefinitionChange,
    TaskRun,
)
for _event_cls in (*_BASES, *EVENT_CLASSES.values()):
    _event_cls._tables = _Tables(_event_cls, _BASE_FIELDS, _event_cls.payload_renames)

_CLASS_BY_NAME: dict[str, type[ListenerEvent]] = {}
for _type, _event_cls in EVENT_CLASSES.items():
    _CLASS_BY_NAME[_type.value] = _event_cls
    _CLASS_BY_NAME["EVENT_TYPE_" + _type.value] = _event_cls
del _type, _event_cls


def from_dict(data: Mapping[str, Any]) -> ListenerEvent:
    """Builds the typed event from a dict, coercing values to the declared types.

    ``data`` has ``id``, ``sequence``, ``type`` (``"TASK_FAIL"`` or ``"EVENT_TYPE_TASK_FAIL"``),
    optional ``event_time``/``publish_time``/``source``/``traceparent``, and ``payload``: the
    payload message as ``MessageToDict(preserving_proto_field_name=True)`` gives it (int64 as
    strings, timestamps as RFC 3339, absent fields left out). Without ``payload``, the payload
    fields are read flat from ``data`` by attribute name, so ``from_dict(event.to_dict())``
    round-trips.
    Unknown payload keys are ignored so that older plugins accept newer publishers' events.

    Raises ValueError for an unknown type, a missing id or sequence, or a malformed value.
    """
    kind = data.get("type")
    cls = _CLASS_BY_NAME.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    event_id = data.get("id")
    sequence = data.get("sequence")
    if event_id is None or sequence is None:
        raise ValueError("an event needs an id and a sequence")
    payload = data.get("payload")
    tables = cls._tables
    kwargs = _pick(tables.flat, data) if payload is None else _pick(tables.payload, payload)
    return cls(
        id=_to_str(event_id),
        sequence=_to_int(sequence),
        event_time=_to_datetime(data.get("event_time")),
        publish_time=_to_datetime(data.get("publish_time")),
        source=_to_str(data.get("source") or ""),
        traceparent=_to_str(data.get("traceparent") or ""),
        **kwargs,
    )
