"""The event as the expression sees it: the ``event`` variable built from a message or a
stored event, whole or only the fields an expression reads (its projection), and the
library's context holding it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

import cel
from google.protobuf.message import Message

from listener.v1 import event_pb2

EVENT = event_pb2.ListenerEvent.DESCRIPTOR
TIMESTAMP = "google.protobuf.Timestamp"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The fields the store assigns, kept in its row rather than in the body.
ROW = frozenset(["id", "sequence", "type", "publish_time"])

#: A projection: field name -> the projection of its message, or FULL for the whole value.
Projection = dict[str, Any]
FULL = None


class StoredLike(Protocol):
    """An event as the store keeps it: the body lacks the fields the store assigns."""

    @property
    def id(self) -> str: ...
    @property
    def sequence(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def publish_time(self) -> datetime: ...
    @property
    def body(self) -> bytes: ...


def value_of(field: Any, value: Any) -> Any:
    """A field's value as the expression sees it (lists, maps, messages converted)."""
    sub = field.message_type
    if sub is None:
        return list(value) if field.is_repeated else value
    if sub.GetOptions().map_entry:
        vfield = sub.fields_by_name["value"]
        return {k: value_of(vfield, v) for k, v in value.items()}
    if field.is_repeated:
        return [_message(item) for item in value]
    return _message(value)


def _project(
    msg: Message, projection: Projection, row: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The fields ``projection`` names, ``row``'s values instead of the message's."""
    out: dict[str, Any] = {}
    fields = msg.DESCRIPTOR.fields_by_name
    for name, sub in projection.items():
        if row is not None and name in row:
            out[name] = row[name]
            continue
        field = fields[name]
        if field.containing_oneof is not None and not msg.HasField(name):
            continue
        value = getattr(msg, name)
        out[name] = value_of(field, value) if sub is FULL else _project(value, sub)
    return out


def _message(msg: Message) -> Any:
    if msg.DESCRIPTOR.full_name == TIMESTAMP:
        return msg.ToDatetime(tzinfo=UTC) if msg.ByteSize() else _EPOCH  # type: ignore[attr-defined]
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        if field.containing_oneof is not None and not msg.HasField(field.name):
            continue  # only the payload actually set
        out[field.name] = value_of(field, getattr(msg, field.name))
    return out


def event_view(
    msg: event_pb2.ListenerEvent, projection: Projection | None = None
) -> dict[str, Any]:
    """The ``event`` variable: every field under its proto name, proto3 defaults included,
    only the set payload, enums as numbers, timestamps as datetimes; with a projection, only
    the fields it names (what the expression reads: the library converts every field it is
    given, and that cost more than the evaluation)."""
    view: dict[str, Any] = _message(msg) if projection is None else _project(msg, projection)
    return view


def context(view: dict[str, Any]) -> Any:
    """The library's context with ``view`` as ``event`` (its conversion: ~10 µs)."""
    found = cel.Context()
    found.add_variable("event", view)
    return found


def freeze(value: Any) -> Any:
    """A hashable copy of a projected view: the key of a filter's known results."""
    if isinstance(value, dict):
        return tuple((k, freeze(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def stored_view(
    stored: StoredLike, projection: Projection | None = None, msg: Message | None = None
) -> dict[str, Any]:
    """:func:`event_view` of a stored event, with the fields the store assigned (id,
    sequence, type, publish time); the body (``msg`` when already parsed) is parsed only
    when the expression reads something of it."""
    when = stored.publish_time
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    row = {"id": stored.id, "sequence": stored.sequence, "type": stored.type, "publish_time": when}
    if projection is None:
        view: dict[str, Any] = _message(event_pb2.ListenerEvent.FromString(stored.body))
        view.update(row)
        return view
    if projection.keys() <= ROW:
        return {name: row[name] for name in projection}
    if msg is None:
        msg = event_pb2.ListenerEvent.FromString(stored.body)
    return _project(msg, projection, row)
