"""Stored events (serialized listener.v1.ListenerEvent) to the SDK's typed event objects."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from event_store.events import StoredEvent
from listener.v1 import event_pb2
from listener_common import events

_TYPE_NAMES = {
    value.number: value.name.removeprefix("EVENT_TYPE_")
    for value in event_pb2.EventType.DESCRIPTOR.values
}


def to_sdk_dict(stored: StoredEvent) -> dict[str, Any]:
    msg = event_pb2.ListenerEvent.FromString(stored.body)
    which = msg.WhichOneof("payload")
    payload = (
        json_format.MessageToDict(getattr(msg, which), preserving_proto_field_name=True)
        if which
        else {}
    )
    return {
        "id": stored.id,
        "sequence": stored.sequence,
        "type": _TYPE_NAMES[stored.type],
        "event_time": msg.event_time.ToJsonString() if msg.HasField("event_time") else None,
        "publish_time": stored.publish_time.isoformat().replace("+00:00", "Z"),
        "source": msg.source,
        "payload": payload,
    }


def to_sdk_event(stored: StoredEvent) -> events.ListenerEvent:
    return events.from_dict(to_sdk_dict(stored))
