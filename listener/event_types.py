"""The event types and their payloads, read once from the generated descriptors.

The one hand-written module of ``listener``: every server and the client take their tables
from here rather than rebuilding them from ``event_pb2``. An ``EventType`` value is
``EVENT_TYPE_`` + the upper-cased name of its payload field in ``ListenerEvent``'s ``payload``
oneof (``task_fail`` ↔ ``EVENT_TYPE_TASK_FAIL``); the protos keep that rule.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor

from listener.v1 import event_pb2

PREFIX = "EVENT_TYPE_"
_PAYLOAD = event_pb2.ListenerEvent.DESCRIPTOR.oneofs_by_name["payload"]

#: Every EventType number → its name without the prefix, ``UNSPECIFIED`` (0) included.
NAMES: dict[int, str] = {
    value.number: value.name.removeprefix(PREFIX) for value in event_pb2.EventType.DESCRIPTOR.values
}

#: Every event type a publisher can send (0, UNSPECIFIED, is never stored).
ALL: frozenset[int] = frozenset(number for number in NAMES if number)

#: The names of :data:`ALL`, in enum order.
PUBLIC_NAMES: list[str] = [name for number, name in NAMES.items() if number]

#: Payload field name (``task_fail``) → EventType number, in the oneof's order.
PAYLOAD_TYPE: dict[str, int] = {
    field.name: event_pb2.EventType.Value(PREFIX + field.name.upper()) for field in _PAYLOAD.fields
}

#: EventType number → its payload field name.
PAYLOAD_FIELD: dict[int, str] = {number: name for name, number in PAYLOAD_TYPE.items()}

#: EventType number → the descriptor of its payload message (``TaskRun`` for TASK_FAIL); every
#: member of the oneof is a message.
PAYLOAD_MESSAGE: dict[int, Descriptor] = {
    PAYLOAD_TYPE[field.name]: field.message_type
    for field in _PAYLOAD.fields
    if field.message_type is not None
}
