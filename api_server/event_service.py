"""listener.v1.EventService: where schedulers publish; replies only after commit."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from sqlalchemy import exc as sa_exc

from api_server import conversions, paging
from api_server.alert_fleet import AlertFleet
from api_server.group_commit import GroupCommitter, earlier_result
from event_store import events
from event_store.store import Store
from listener import event_types
from listener.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc
from listener_core import errors
from listener_core.auth import caller_key
from listener_core.metrics import NO_METRICS, ApiMetrics, NullMetrics
from listener_core.server import Context
from listener_core.settings import LimitSettings
from listener_core.tracing import Tracing

MAX_SOURCE_CHARS = 255
MAX_REQUEST_ID_CHARS = 128
CALLER_CHARS = 80  # the store's column (a long unix socket peer is cut)
#: What a page of ListEvents leaves of the message limit for everything but event bodies,
#: and what each event adds to its body (id, sequence, type, times, framing).
PAGE_SLACK_BYTES = 64 * 1024
EVENT_OVERHEAD_BYTES = 256


def fitting(sizes: Sequence[int], budget: int) -> int:
    """How many events (by body size, in order) fit in ``budget`` bytes; at least one, so
    a listing always moves on."""
    used = 0
    for n, size in enumerate(sizes):
        used += size + EVENT_OVERHEAD_BYTES
        if used > budget:
            return max(1, n)
    return len(sizes)


def prepare(event: event_pb2.ListenerEvent, field: str, index: int = -1) -> tuple[int, bytes]:
    """Checks one published event; returns its type number and the body to store. Errors
    name ``field`` (``field[index]`` with an index: the name is built only for an error).

    Completes the event in place (type from the payload, event_time if unset): it belongs
    to the request being handled, and copying it first cost a third of this function."""
    which = event.WhichOneof("payload")
    if which is None:
        field = _named(field, index)
        raise errors.InvalidArgument(
            f"{field}: a payload is required (one of {', '.join(event_types.PAYLOAD_TYPE)})",
            reason="PAYLOAD_REQUIRED",
            field_violations=[(f"{field}.payload", "required")],
        )
    expected = event_types.PAYLOAD_TYPE[which]
    given = event.type
    if given and given != expected:  # one comparison when it is right or left out
        _wrong_type(given, which, _named(field, index))
    if event.id or event.sequence or event.HasField("publish_time"):
        _output_only(event, _named(field, index))
    if len(event.source) > MAX_SOURCE_CHARS:
        field = _named(field, index)
        raise errors.InvalidArgument(
            f"{field}.source is longer than {MAX_SOURCE_CHARS} characters",
            field_violations=[(f"{field}.source", "too long")],
        )
    if not given:
        event.type = expected  # type: ignore[assignment]
    if not event.HasField("event_time"):
        event.event_time.GetCurrentTime()
    return expected, event.SerializeToString()


def _wrong_type(given: int, which: str, field: str) -> None:
    if given not in event_types.ALL:
        raise errors.InvalidArgument(
            f"{field}.type: unknown event type {given}",
            reason="UNKNOWN_EVENT_TYPE",
            field_violations=[(f"{field}.type", "unknown event type")],
        )
    raise errors.InvalidArgument(
        f"{field}.type is {event_pb2.EventType.Name(given)} but the payload is {which}",  # type: ignore[arg-type]
        reason="TYPE_MISMATCH",
        field_violations=[(f"{field}.type", "does not match the payload")],
    )


def _named(field: str, index: int) -> str:
    return field if index < 0 else f"{field}[{index}]"


def _output_only(event: event_pb2.ListenerEvent, field: str) -> None:
    given = [
        name
        for name, set_ in (
            ("id", bool(event.id)),
            ("sequence", bool(event.sequence)),
            ("publish_time", event.HasField("publish_time")),
        )
        if set_
    ]
    raise errors.InvalidArgument(
        f"{field}: {', '.join(given)} are assigned by the server; leave them out",
        field_violations=[(f"{field}.{f}", "output only") for f in given],
    )


def request_key(
    request_id: str, published: Iterable[event_pb2.ListenerEvent], context: Context
) -> events.RequestKey | None:
    """The publish's request id scoped to its caller (token digest; peer host when the API
    is open), with a digest of the events as sent — before the server completes them, so a
    retry of an event without event_time matches."""
    if not request_id:
        return None
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise errors.InvalidArgument(
            f"request_id is longer than {MAX_REQUEST_ID_CHARS} characters",
            field_violations=[("request_id", "too long")],
        )
    digest = hashlib.sha256()
    for event in published:
        data = event.SerializeToString(deterministic=True)
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    caller = caller_key(context.invocation_metadata(), context.peer())[:CALLER_CHARS]
    return events.RequestKey(caller, request_id, digest.hexdigest())


class EventService(event_service_pb2_grpc.EventServiceServicer):
    def __init__(
        self,
        store: Store,
        fleet: AlertFleet,
        limits: LimitSettings,
        metrics: ApiMetrics | NullMetrics = NO_METRICS,
        tracing: Tracing | None = None,
    ) -> None:
        """``tracing`` (None: off) stores each publish span's context with its events."""
        self.store = store
        self.tracing = tracing
        self.fleet = fleet
        self.max_batch = limits.max_batch_events
        self.page_bytes = max(limits.max_message_bytes - PAGE_SLACK_BYTES, 1)
        self.committer = GroupCommitter(store, fleet.notify, on_stored=metrics.published)

    async def _publish(
        self, items: Sequence[tuple[int, bytes]], key: events.RequestKey | None
    ) -> list[events.StoredEvent]:
        # In the call's own task: the publish span is current here, not in the committer's.
        trace = None if self.tracing is None else self.tracing.traceparent()
        try:
            return await self.committer.publish(items, key, trace)
        except sa_exc.IntegrityError:
            if key is None:
                raise
            earlier = await earlier_result(self.store, key)  # lost a race with the same key
            if earlier is None:
                raise
            return earlier

    async def PublishEvent(
        self, request: event_service_pb2.PublishEventRequest, context: Context
    ) -> event_service_pb2.PublishEventResponse:
        if not request.HasField("event"):
            raise errors.InvalidArgument(
                "event is required", field_violations=[("event", "required")]
            )
        key = request_key(request.request_id, [request.event], context)
        stored = await self._publish([prepare(request.event, "event")], key)
        return event_service_pb2.PublishEventResponse(id=stored[0].id, sequence=stored[0].sequence)

    async def PublishEvents(
        self, request: event_service_pb2.PublishEventsRequest, context: Context
    ) -> event_service_pb2.PublishEventsResponse:
        if not request.events:
            raise errors.InvalidArgument(
                "events must not be empty", field_violations=[("events", "required")]
            )
        if len(request.events) > self.max_batch:
            raise errors.InvalidArgument(
                f"{len(request.events)} events in one call; the limit is {self.max_batch}",
                field_violations=[("events", "too many")],
            )
        key = request_key(request.request_id, request.events, context)
        items = [prepare(e, "events", i) for i, e in enumerate(request.events)]
        stored = await self._publish(items, key)
        reply = event_service_pb2.PublishEventsResponse()
        add = reply.events.add  # half the cost of building each message and then the list
        for event in stored:
            add(id=event.id, sequence=event.sequence)
        return reply

    async def ListEvents(
        self, request: event_service_pb2.ListEventsRequest, context: Context
    ) -> event_service_pb2.ListEventsResponse:
        size = paging.page_size(request.page_size)
        bound = (request.after_sequence, tuple(request.event_types))
        token = paging.decode(request.page_token, *bound)
        after = int(token) if token.isdigit() else request.after_sequence
        types = list(request.event_types) or None
        if types is not None:
            bad = [t for t in types if t not in event_types.ALL]
            if bad:
                raise errors.InvalidArgument(
                    f"unknown event type(s) {bad}", field_violations=[("event_types", "unknown")]
                )
        # Sized first, read second: a page stays under the message limit (a shorter page
        # with a next_page_token), and is never built in memory beyond it.
        async with self.store.reader() as session:
            sizes, more = await paging.read_page(
                lambda limit: events.sizes_after(session, after, types, limit),  # type: ignore[arg-type]
                size,
            )
            take = fitting(sizes, self.page_bytes)
            more = more or take < len(sizes)
            rows = await events.read_after(session, after, types, take) if take else []  # type: ignore[arg-type]
        return event_service_pb2.ListEventsResponse(
            events=[conversions.event_message(r) for r in rows],
            next_page_token=paging.encode(str(rows[-1].sequence), *bound) if more else "",
        )
