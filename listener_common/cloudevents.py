"""CloudEvents 1.0 for plugins: the context attributes of an event, the structured envelope,
and the binary-mode headers of the protocol bindings, so every destination describes an event
the same way and consumers can use any CloudEvents SDK.

Binary mode keeps the message body as it is (the event's ``to_dict()`` as JSON) and carries
the attributes as protocol headers, each binding with its own prefix: Kafka ``ce_``, NATS and
HTTP ``ce-``, AMQP ``cloudEvents_`` (the current AMQP binding; older receivers that only know
``cloudEvents:`` are told so in the plugin's README). ``datacontenttype`` is not a header there:
it goes in the protocol's own content type.
"""

from __future__ import annotations

from typing import Any

from listener_common.events import ListenerEvent

SPEC_VERSION = "1.0"
TYPE_PREFIX = "org.apache.dolphinscheduler.listener."
DEFAULT_SOURCE = "/dolphinscheduler/listener"
DATA_CONTENT_TYPE = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"

KAFKA_PREFIX = "ce_"
NATS_PREFIX = "ce-"
HTTP_PREFIX = "ce-"
AMQP_PREFIX = "cloudEvents_"


def attributes(event: ListenerEvent, source: str = DEFAULT_SOURCE) -> dict[str, str]:
    """The context attributes, as strings: id, source, type (``…task_fail``), the sequence
    extension (ordered within the source), time when the scheduler gave one, and the
    Distributed Tracing extension's ``traceparent`` when the event has one."""
    found = {
        "specversion": SPEC_VERSION,
        "id": event.id,
        "source": source or DEFAULT_SOURCE,
        "type": TYPE_PREFIX + event.type.value.lower(),
        "datacontenttype": DATA_CONTENT_TYPE,
        "sequence": str(event.sequence),
    }
    time = event.to_dict().get("event_time")
    if time:
        found["time"] = str(time)
    if event.traceparent:  # the Distributed Tracing extension
        found["traceparent"] = event.traceparent
    return found


def structured(event: ListenerEvent, source: str = DEFAULT_SOURCE) -> dict[str, Any]:
    """The structured-mode envelope: the attributes with the event's dict as ``data``."""
    return {**attributes(event, source), "data": event.to_dict()}


def binary_headers(
    event: ListenerEvent, prefix: str, source: str = DEFAULT_SOURCE
) -> dict[str, str]:
    """Binary mode: each attribute but ``datacontenttype`` as ``<prefix><name>``."""
    return {
        prefix + name: value
        for name, value in attributes(event, source).items()
        if name != "datacontenttype"
    }
