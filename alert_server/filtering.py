"""An instance's content filter applied to a batch it read, before the plugin sees it.

Filtering happens here, on the delivery side, so publishing costs the same whatever the
number of instances and filters. The expression's view of an event is built once per event
(``listener_core.event_filter.cached_context``) and shared by every instance whose filter
reads the same fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from event_store.events import StoredEvent
from listener.v1 import event_pb2
from listener_core.event_filter import EventFilter, FilterRuntimeError, cached_context


@dataclass(frozen=True)
class Choice:
    """The events of a batch the filter selected, up to the first one it failed on."""

    chosen: list[StoredEvent]
    # Every event of the batch up to this sequence was either chosen or filtered out.
    through: int
    # The event the expression failed on, and its error; None when it never failed.
    failed: StoredEvent | None = None
    error: str = ""


def _message(stored: StoredEvent) -> event_pb2.ListenerEvent:
    msg = event_pb2.ListenerEvent.FromString(stored.body)
    msg.id = stored.id
    msg.sequence = stored.sequence
    msg.type = stored.type  # type: ignore[assignment]
    msg.publish_time.FromDatetime(stored.publish_time)
    return msg


def choose(content_filter: EventFilter, batch: Sequence[StoredEvent], cursor: int) -> Choice:
    """The events of ``batch`` (read after ``cursor``) that ``content_filter`` selects."""
    chosen: list[StoredEvent] = []
    through = cursor
    for stored in batch:
        converted = cached_context(content_filter, stored.sequence, stored.id, _message, stored)
        try:
            if content_filter.selects(converted):
                chosen.append(stored)
        except FilterRuntimeError as exc:
            return Choice(chosen, through, stored, str(exc))
        through = stored.sequence
    return Choice(chosen, through)


def handled_before(batch: Sequence[StoredEvent], sequence: int, cursor: int) -> int:
    """The sequence of the batch's event just before ``sequence`` (``cursor`` for the first):
    with a filter, every event before a failing one was delivered or filtered out."""
    before = cursor
    for stored in batch:
        if stored.sequence >= sequence:
            break
        before = stored.sequence
    return before
