"""Stored events (serialized listener.v1.ListenerEvent) to the SDK's typed event objects.

This is on the delivery hot path, once per event and instance, so it avoids
``json_format.MessageToDict`` (reflection-heavy) and keeps recently built events: SDK events
are frozen, so every instance subscribed to an event shares one object. The frequent event
types are built by a function generated for each at import (``_compile``); the others, and
anything unexpected, by ``events.from_dict(to_sdk_dict(...))``, which tests hold them to.
"""

from __future__ import annotations

import dataclasses
import keyword
import linecache
import typing
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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CACHE_TURN = 20_000  # the OrderedDict before kept 20,000: at least as many, for fan-out
_recent: dict[str, events.ListenerEvent] = {}  # built since the last turn
_older: dict[str, events.ListenerEvent] = {}  # built in the turn before it


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


_Builder = Callable[[StoredEvent], events.ListenerEvent]
_COMMON = ("id", "sequence", "event_time", "publish_time", "source", "traceparent")


def _general(stored: StoredEvent) -> events.ListenerEvent:
    return events.from_dict(to_sdk_dict(stored))


@dataclass(frozen=True)
class _Direct:
    """How to build one event class straight from its payload message: attributes whose
    proto values already have the SDK's type (int, str, bool), and timestamps, each as
    (proto field, attribute)."""

    cls: type[events.ListenerEvent]
    oneof_field: str
    plain: tuple[tuple[str, str], ...]
    times: tuple[tuple[str, str], ...]


def _direct_types() -> dict[int, _Direct]:
    """Event types whose payloads have only scalar and timestamp fields (runs, removals,
    server down: the frequent ones). The others, with nested lists, take the general path."""
    found: dict[int, _Direct] = {}
    for name, number in event_types.PAYLOAD_TYPE.items():
        cls = events.EVENT_CLASSES[events.EventType(event_types.NAMES[number])]
        hints = typing.get_type_hints(cls)
        plain: list[tuple[str, str]] = []
        times: list[tuple[str, str]] = []
        covered = set(_COMMON)
        for proto in event_types.PAYLOAD_MESSAGE[number].fields:
            if keyword.iskeyword(proto.name):  # not writable as ``payload.<name>``
                break
            attr = cls.payload_renames.get(proto.name, proto.name)
            hint = hints.get(attr)
            if proto.message_type is None and not proto.is_repeated and hint in (int, str, bool):
                plain.append((proto.name, attr))
            elif proto.message_type is not None and proto.message_type.full_name == _TIMESTAMP:
                times.append((proto.name, attr))
            else:
                break
            covered.add(attr)
        else:
            complete = covered == {f.name for f in dataclasses.fields(cls)}
            if complete and not hasattr(cls, "__post_init__"):
                found[number] = _Direct(cls, name, tuple(plain), tuple(times))
    return found


_DIRECT = _direct_types()


def _time_lines(owner: str, field: str, attr: str) -> list[str]:
    """Sets ``attr`` to the timestamp ``owner.field`` as Timestamp.ToDatetime(tzinfo=UTC)
    gives it, None when unset, without its generic checks and keyword arguments.

    ``fromtimestamp`` alone when there are no nanos (most timestamps): 0.25 µs, where the
    epoch sum takes 0.5 and ``replace(microsecond=...)`` after it 0.9. A timestamp with
    seconds or nanos is set, so ``HasField`` (0.1 µs) is asked only of one that reads as the
    epoch (an unset one reads so, and reading it does not set it)."""
    return [
        f"    stamp = {owner}.{field}",
        "    seconds, nanos = stamp.seconds, stamp.nanos",
        "    if nanos:",
        f"        set_{attr}(event, EPOCH + delta(0, seconds, nanos // 1000))",
        f"    elif seconds or {owner}.HasField({field!r}):",
        f"        set_{attr}(event, fromtimestamp(seconds, UTC))",
        "    else:",
        f"        set_{attr}(event, None)",
    ]


def _builder_source(direct: _Direct) -> str:
    """The Python source of ``direct``'s builder: one straight line of field reads and slot
    sets, as ``dataclasses`` writes an ``__init__``."""
    which = direct.oneof_field
    lines = [
        f"def build_{which}(stored):",
        f'    """A {direct.cls.__name__} from a stored event (generated: alert_server.convert)."""',
        "    msg = parse(stored.body)",
        f"    if msg.WhichOneof('payload') != {which!r}:  # as the API server never stores",
        "        return general(stored)",
        f"    payload = msg.{which}",
        "    event = new(cls)",
        "    set_id(event, stored.id)",
        "    set_sequence(event, stored.sequence)",
        *_time_lines("msg", "event_time", "event_time"),
        "    set_publish_time(event, stored.publish_time)",
        "    set_source(event, msg.source)",
        "    set_traceparent(event, stored.traceparent or '')",
    ]
    lines += [f"    set_{attr}(event, payload.{proto})" for proto, attr in direct.plain]
    for proto, attr in direct.times:
        lines += _time_lines("payload", proto, attr)
    lines.append("    return event")
    return "\n".join(lines) + "\n"


def _compile(direct: _Direct) -> _Builder:
    """``direct``'s builder, its source registered with ``linecache`` under a name of its own
    (so tracebacks show its lines and ``inspect.getsource`` finds it).

    Events are filled through their slots' setters rather than the frozen dataclass's
    ``__init__`` (``object.__setattr__`` per field, three times slower). Straight-line code,
    with the timestamps inline, rather than a loop over (field, setter) pairs calling a
    timestamp function: 6.9 -> 4.6 µs for the bench's TaskRun event (13 plain fields and
    three timestamps). Built only for classes where that sets every field
    (``_direct_types``), and tested equal to ``events.from_dict(to_sdk_dict(...))`` for
    every one, on edge and random values (tests/unit/test_convert.py)."""
    source = _builder_source(direct)
    filename = f"<alert_server.convert builder {direct.oneof_field}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {
        "parse": event_pb2.ListenerEvent.FromString,
        "general": _general,
        "new": object.__new__,
        "cls": direct.cls,
        "EPOCH": _EPOCH,
        "delta": timedelta,
        "fromtimestamp": datetime.fromtimestamp,
        "UTC": UTC,
    }
    for attr in (*_COMMON, *(a for _, a in direct.plain), *(a for _, a in direct.times)):
        namespace[f"set_{attr}"] = getattr(direct.cls, attr).__set__
    exec(compile(source, filename, "exec"), namespace)  # our own source, above
    return namespace[f"build_{direct.oneof_field}"]  # type: ignore[no-any-return]


_BUILDERS: dict[int, _Builder] = {number: _compile(d) for number, d in _DIRECT.items()}


def _build(stored: StoredEvent) -> events.ListenerEvent:
    return _BUILDERS.get(stored.type, _general)(stored)


def to_sdk_event(stored: StoredEvent) -> events.ListenerEvent:
    """The SDK event of ``stored``, built once for all the instances that get it soon after
    each other: the events built lately are kept, the newest ``_CACHE_TURN`` to twice that.

    Two plain dicts, the older dropped whole when the newer fills, rather than one
    ``OrderedDict`` evicting its oldest entry per insert: 0.1 µs an event against 0.35, paid
    on every event when a single instance reads it (the usual case). It keeps at least the
    20,000 the OrderedDict kept, for fan-out: with 10,000, one run of bench 3/4 (250,000
    events, 20 instances in 4) built 284,000 events, with 20,000 250,000. The cost is up to
    twice the memory: 40,000 events of the bench's TaskRun, 40 MB (1 KB each)."""
    global _recent, _older
    key = stored.id
    event = _recent.get(key)
    if event is None:
        event = _older.get(key)
    if event is None or event.sequence != stored.sequence:
        event = _BUILDERS.get(stored.type, _general)(stored)  # _build, without its frame
        _recent[key] = event
        if len(_recent) >= _CACHE_TURN:
            _older, _recent = _recent, {}
    return event
