"""Stored events (serialized listener.v1.ListenerEvent) to the SDK's typed event objects.

This is on the delivery hot path, once per event and instance, so it avoids
``json_format.MessageToDict`` (reflection-heavy) and keeps recently built events: SDK events
are frozen, so every instance subscribed to an event shares one object.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC
from typing import Any

from google.protobuf.message import Message

from event_store.events import StoredEvent
from listener.v1 import event_pb2
from listener_common import events

_TYPE_NAMES = {
    value.number: value.name.removeprefix("EVENT_TYPE_")
    for value in event_pb2.EventType.DESCRIPTOR.values
}
#: Every event type a publisher can send (0, UNSPECIFIED, is never stored).
ALL_TYPES = frozenset(number for number in _TYPE_NAMES if number)
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
        "type": _TYPE_NAMES[stored.type],
        "event_time": msg.event_time.ToDatetime(tzinfo=UTC) if msg.HasField("event_time") else None,
        "publish_time": stored.publish_time,
        "source": msg.source,
        "payload": _plain(getattr(msg, which)) if which else {},
    }


def to_sdk_event(stored: StoredEvent) -> events.ListenerEvent:
    event = _cache.get(stored.id)
    if event is None or event.sequence != stored.sequence:
        event = events.from_dict(to_sdk_dict(stored))
        _cache[stored.id] = event
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return event
