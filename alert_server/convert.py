"""Stored events (serialized listener.v1.ListenerEvent) to the SDK's typed event objects.

This is on the delivery hot path, once per event and instance, so it avoids
``json_format.MessageToDict`` (reflection-heavy) and keeps recently built events: SDK events
are frozen, so every instance subscribed to an event shares one object.
"""

from __future__ import annotations

import dataclasses
import typing
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import Message

from event_store.events import StoredEvent
from listener import event_types
from listener.v1 import event_pb2
from listener_common import events

_TIMESTAMP = "google.protobuf.Timestamp"
_CACHE_SIZE = 20_000
_cache: OrderedDict[str, events.ListenerEvent] = OrderedDict()


def _plain(msg: Message) -> dict[str, Any]:
    """The set fields of a payload message as Python values (the SDK fills defaults)."""
    out: dict[str, Any] = {}
    for field, value in msg.ListFields():
        if field.message_type is None:
            out[field.name] = list(value) if field.is_repeated else value
        elif field.message_type.full_name == _TIMESTAMP:
            out[field.name] = value.ToDatetime(tzinfo=UTC)
        elif field.is_repeated:
            out[field.name] = [_plain(item) for item in value]
        else:
            out[field.name] = _plain(value)
    return out


def to_sdk_dict(stored: StoredEvent) -> dict[str, Any]:
    msg = event_pb2.ListenerEvent.FromString(stored.body)
    which = msg.WhichOneof("payload")
    return {
        "id": stored.id,
        "sequence": stored.sequence,
        "type": event_types.NAMES[stored.type],
        "event_time": msg.event_time.ToDatetime(tzinfo=UTC) if msg.HasField("event_time") else None,
        "publish_time": stored.publish_time,
        "source": msg.source,
        "traceparent": stored.traceparent or "",
        "payload": _plain(getattr(msg, which)) if which else {},
    }


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(value: Any) -> datetime:
    """Timestamp.ToDatetime(tzinfo=UTC), without its generic checks (a third of the cost)."""
    return _EPOCH + timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)


_Setter = Callable[[Any, Any], None]
_COMMON = ("id", "sequence", "event_time", "publish_time", "source", "traceparent")


@dataclass(frozen=True)
class _Direct:
    """How to build one event class straight from its payload message: attributes whose
    proto values already have the SDK's type (int, str, bool), and timestamps.

    Events are filled through their slots' setters rather than the frozen dataclass's
    ``__init__`` (which goes through ``object.__setattr__`` per field, three times slower);
    built only for classes where that sets every field, and tested equal to ``from_dict``."""

    cls: type[events.ListenerEvent]
    oneof_field: str
    common: tuple[_Setter, ...]  # in _COMMON's order
    plain: tuple[tuple[str, _Setter], ...]  # (proto field, setter of its attribute)
    times: tuple[tuple[str, _Setter], ...]


def _setter(cls: type, attr: str) -> _Setter:
    return getattr(cls, attr).__set__  # type: ignore[no-any-return]


def _direct_builders() -> dict[int, _Direct]:
    """Event types whose payloads have only scalar and timestamp fields (runs, removals,
    server down: the frequent ones). The others, with nested lists, take the general path."""
    built: dict[int, _Direct] = {}
    for name, number in event_types.PAYLOAD_TYPE.items():
        cls = events.EVENT_CLASSES[events.EventType(event_types.NAMES[number])]
        hints = typing.get_type_hints(cls)
        plain: list[tuple[str, _Setter]] = []
        times: list[tuple[str, _Setter]] = []
        covered = set(_COMMON)
        for proto in event_types.PAYLOAD_MESSAGE[number].fields:
            attr = cls.payload_renames.get(proto.name, proto.name)
            hint = hints.get(attr)
            if proto.message_type is None and not proto.is_repeated and hint in (int, str, bool):
                plain.append((proto.name, _setter(cls, attr)))
            elif proto.message_type is not None and proto.message_type.full_name == _TIMESTAMP:
                times.append((proto.name, _setter(cls, attr)))
            else:
                break
            covered.add(attr)
        else:
            complete = covered == {f.name for f in dataclasses.fields(cls)}
            if complete and not hasattr(cls, "__post_init__"):
                common = tuple(_setter(cls, attr) for attr in _COMMON)
                built[number] = _Direct(cls, name, common, tuple(plain), tuple(times))
    return built


_DIRECT = _direct_builders()


def _build(stored: StoredEvent) -> events.ListenerEvent:
    direct = _DIRECT.get(stored.type)
    if direct is None:
        return events.from_dict(to_sdk_dict(stored))
    msg = event_pb2.ListenerEvent.FromString(stored.body)
    if msg.WhichOneof("payload") != direct.oneof_field:  # as the API server never stores
        return events.from_dict(to_sdk_dict(stored))
    payload = getattr(msg, direct.oneof_field)
    event = object.__new__(direct.cls)
    set_id, set_sequence, set_event_time, set_publish_time, set_source, set_trace = direct.common
    set_id(event, stored.id)
    set_sequence(event, stored.sequence)
    set_event_time(event, _time(msg.event_time) if msg.HasField("event_time") else None)
    set_publish_time(event, stored.publish_time)
    set_source(event, msg.source)
    set_trace(event, stored.traceparent or "")
    for proto, set_value in direct.plain:
        set_value(event, getattr(payload, proto))
    for proto, set_value in direct.times:
        set_value(event, _time(getattr(payload, proto)) if payload.HasField(proto) else None)
    return event


def to_sdk_event(stored: StoredEvent) -> events.ListenerEvent:
    event = _cache.get(stored.id)
    if event is None or event.sequence != stored.sequence:
        event = _build(stored)
        _cache[stored.id] = event
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return event
