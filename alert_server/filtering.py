"""An instance's content filter applied to a batch it read, before the plugin sees it.

Filtering happens here, on the delivery side, so publishing costs the same whatever the
number of instances and filters. What an expression reads of an event is converted once per
event (``EventFilter.reads``), shared by every instance whose filter reads the same fields,
and each filter calls the CEL library once per distinct values it reads
(``EventFilter.results``): per event and instance, what is left is one dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress

from event_store.events import StoredEvent
from listener_core.event_filter import EventFilter, FilterRuntimeError


@dataclass(frozen=True)
class Choice:
    """The events of a batch the filter selected, up to the first one it failed on."""

    chosen: list[StoredEvent]
    # Every event of the batch up to this sequence was either chosen or filtered out.
    through: int
    # The event the expression failed on, and its error; None when it never failed.
    failed: StoredEvent | None = None
    error: str = ""


def choose(content_filter: EventFilter, batch: Sequence[StoredEvent], cursor: int) -> Choice:
    """The events of ``batch`` (read after ``cursor``) that ``content_filter`` selects."""
    read = content_filter.reads.of(batch)
    known = content_filter.results.get
    answers = list(map(known, read))
    if batch and None not in answers:  # every one known: no loop in Python
        return Choice(list(compress(batch, answers)), batch[-1].sequence)
    chosen: list[StoredEvent] = []
    through = cursor
    for stored, values in zip(batch, read, strict=True):
        selected = known(values)
        if selected is None:
            try:
                selected = content_filter.evaluate(values)
            except FilterRuntimeError as exc:
                return Choice(chosen, through, stored, str(exc))
        if selected:
            chosen.append(stored)
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
