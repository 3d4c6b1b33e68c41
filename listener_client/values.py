"""What callers hand the client, made into what the API takes: event types by name, events
from their JSON form, resource names from bare ids, params as text, packages as bytes.

Shared by the client, the publishers and listenerctl; none of it calls the server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from listener import event_types
from listener.v1 import event_pb2, plugin_pb2

#: ``progress(sent_bytes, total_bytes)``, called as a package upload goes.
Progress = Callable[[int, int], None]
#: A plugin package: zip bytes, or the path of a zip file.
Package = bytes | str | os.PathLike[str]
#: An event to publish: a ListenerEvent, or its JSON form as a dict.
EventLike = event_pb2.ListenerEvent | Mapping[str, Any]

#: The 13 event type names without the ``EVENT_TYPE_`` prefix, in enum order.
EVENT_TYPE_NAMES = event_types.PUBLIC_NAMES
_NUMBERS = {name: number for number, name in event_types.NAMES.items() if number}

PLUGINS = "plugins"
INSTANCES = "listenerInstances"


def event_type(value: str | int) -> int:
    """An EventType number from ``TASK_FAIL``, ``task_fail``, ``EVENT_TYPE_TASK_FAIL`` or a
    number; raises ValueError naming the valid names."""
    if isinstance(value, int):
        if value not in event_types.ALL:
            raise ValueError(f"unknown event type {value}")
        return value
    name = value.strip().upper()
    if name.isdigit():
        return event_type(int(name))
    number = _NUMBERS.get(name.removeprefix(event_types.PREFIX))
    if number is None:
        raise ValueError(f"unknown event type {value!r}; one of {', '.join(EVENT_TYPE_NAMES)}")
    return number


def type_name(number: int) -> str:
    """``TASK_FAIL`` for EventType 13 (the number itself when unknown)."""
    return event_types.NAMES.get(number, str(number))


def to_event(value: EventLike) -> event_pb2.ListenerEvent:
    """A ListenerEvent from its JSON form (snake_case or camelCase field names)."""
    if isinstance(value, event_pb2.ListenerEvent):
        return value
    try:
        return json_format.ParseDict(dict(value), event_pb2.ListenerEvent())
    except json_format.ParseError as exc:
        raise ValueError(f"not a ListenerEvent: {exc}") from None


def resource_name(collection: str, ident: str) -> str:
    """``plugins/x`` from ``x`` or ``plugins/x`` (``collection`` is ``plugins`` or
    ``listenerInstances``)."""
    return ident if ident.startswith(collection + "/") else f"{collection}/{ident}"


def param_text(value: object) -> str:
    """A param value as the API carries it: text, booleans as true/false, lists as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def read_package(package: Package) -> bytes:
    return bytes(package) if isinstance(package, (bytes, bytearray)) else Path(package).read_bytes()


def isolation(value: str | None) -> int:
    """``namespace``/``process`` as the Isolation enum (unspecified when not given)."""
    if not value:
        return plugin_pb2.ISOLATION_UNSPECIFIED
    try:
        return plugin_pb2.Isolation.Value("ISOLATION_" + value.upper())
    except ValueError:
        raise ValueError(f"isolation must be namespace or process, not {value!r}") from None
