"""Which fields of each message type the request checks visit, and the limits they apply.

Shared by the two passes of :mod:`api_server.validation`: the walk that names every field at
fault, and the fast pass (:mod:`api_server.validation_fast`) that only answers "all good?".
Both follow the same plan, computed once per message type from its descriptor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Longest text of a request's string fields (outside event payloads), by field name. Columns
#: are VARCHAR(255) or less, and PostgreSQL and MySQL refuse longer values; names and ids are
#: bounded so an error message quoting one stays short.
STRING_LIMITS: Mapping[str, int] = {
    "display_name": 255,
    "name": 255,
    "parent": 255,
    "plugin": 255,
    "etag": 64,
    "plugin_id": 63,
    "listener_instance_id": 63,
    "package_sha256": 64,
    "sha256": 64,
    "page_token": 1024,
    "request_id": 128,
    "paths": 64,
}
#: Any other string field of a request, except in events.
DEFAULT_STRING_LIMIT = 4096
#: Inside events only these are limited: payloads carry the scheduler's own texts (task
#: params, descriptions), bounded by the message size.
EVENT_STRING_LIMITS: Mapping[str, int] = {"source": 255}
#: Most entries of a repeated field, by field name.
REPEATED_LIMITS: Mapping[str, int] = {"paths": 16, "event_types": 64, "sequences": 1000}
#: Instance params: entries, and characters of a key and of a value.
MAX_PARAMS = 256
MAX_PARAM_KEY = 128
MAX_PARAM_VALUE = 65_536
#: Timestamps must be between 0001-01-01 and 9999-12-31 (google.protobuf.Timestamp's range).
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799

TIMESTAMP = "google.protobuf.Timestamp"
#: Not visited: free-form JSON, and output-only parts of resources, which services ignore and
#: clients may send back as they got them (a long last_error, a plugin's form).
OPAQUE = frozenset(
    {
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "listener.v1.DeliveryStatus",
        "listener.v1.PluginParam",
    }
)
EVENT = "listener.v1.ListenerEvent"
EVENT_TYPE = "listener.v1.EventType"


@dataclass(frozen=True)
class Step:
    """One field of a message type that a rule applies to (the others are never visited)."""

    name: str
    kind: str  # "timestamp", "message", "map", "enum", "string" or "count"
    repeated: bool
    max_items: int | None = None
    max_chars: int = 0
    enum_values: frozenset[int] = frozenset()
    enum_name: str = ""
    in_event: bool = False
    oneof: str = ""
    message: Any = None  # the descriptor of a "message" step's type


@dataclass
class Plan:
    steps: list[Step]
    #: Message members of each oneof, by oneof name: one WhichOneof finds the one to visit.
    oneofs: dict[str, dict[str, Step]]

    def __bool__(self) -> bool:
        return bool(self.steps or self.oneofs)


PLANS: dict[tuple[str, bool], Plan] = {}


def plan_for(desc: Any, in_event: bool) -> Plan:
    """The fields of ``desc`` worth visiting, computed once per message type.

    Skipping the rest matters for publishing: an event's payload is mostly numbers and free
    text, and a batch holds up to ``max_batch_events`` of them.
    """
    key = (desc.full_name, in_event)
    if key in PLANS:
        return PLANS[key]
    PLANS[key] = Plan([], {})  # a recursive type sees an empty plan while making its own
    in_event = in_event or desc.full_name == EVENT
    steps: list[Step] = []
    for fd in desc.fields:
        oneof = fd.containing_oneof.name if fd.containing_oneof is not None else ""
        repeated = bool(fd.is_repeated)
        max_items = REPEATED_LIMITS.get(fd.name) if repeated else None
        sub = fd.message_type
        if sub is not None and sub.GetOptions().map_entry:
            steps.append(Step(fd.name, "map", False))
        elif sub is not None and sub.full_name == TIMESTAMP:
            steps.append(Step(fd.name, "timestamp", repeated, max_items, oneof=oneof))
        elif sub is not None and sub.full_name not in OPAQUE and plan_for(sub, in_event):
            steps.append(
                Step(
                    fd.name,
                    "message",
                    repeated,
                    max_items,
                    in_event=in_event,
                    oneof=oneof,
                    message=sub,
                )
            )
        elif fd.type == fd.TYPE_ENUM and fd.enum_type is not None:
            steps.append(
                Step(
                    fd.name,
                    "enum",
                    repeated,
                    max_items,
                    enum_values=frozenset(fd.enum_type.values_by_number),
                    enum_name=fd.enum_type.full_name,
                )
            )
        elif fd.type == fd.TYPE_STRING and (not in_event or fd.name in EVENT_STRING_LIMITS):
            if in_event:
                limit = EVENT_STRING_LIMITS[fd.name]
            else:
                limit = STRING_LIMITS.get(fd.name, DEFAULT_STRING_LIMIT)
            steps.append(Step(fd.name, "string", repeated, max_items, max_chars=limit))
        elif max_items is not None:
            steps.append(Step(fd.name, "count", True, max_items))
    oneofs: dict[str, dict[str, Step]] = {}
    for step in [st for st in steps if st.oneof and st.kind in ("message", "timestamp")]:
        oneofs.setdefault(step.oneof, {})[step.name] = step
        steps.remove(step)
    plan = PLANS[key] = Plan(steps, oneofs)
    return plan
