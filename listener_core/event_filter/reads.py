"""What the filters reading the same fields read of each event, converted once per process
and interned: events with the same values share one :class:`Values`, so a filter's known
result for them is one lookup by identity (``EventFilter.results``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor

from listener.v1 import event_pb2
from listener_core.event_filter.view import (
    EVENT,
    FULL,
    ROW,
    Projection,
    StoredLike,
    context,
    freeze,
    stored_view,
    value_of,
)

#: Events (and distinct values) kept per projection: more than a few batches of every
#: runner in flight, so runners a little apart still share the conversion.
_CACHE_SIZE = 20_000
_BATCHES = 16  # recent batches and their values, per projection (as many as reads.py keeps)
_ABSENT = object()  # a payload the event does not carry


class Values:
    """What the filters of one group (the same projection) read of an event, and that
    event's ``event`` variable for the library, built on first use. Events with the same
    values share one object, so a filter's known result for them is one lookup by identity
    (no hashing of the values per event and instance)."""

    __slots__ = ("_context", "view")

    def __init__(self, view: dict[str, Any]) -> None:
        self.view = view
        self._context: Any = None

    def context(self) -> Any:
        if self._context is None:
            self._context = context(self.view)  # the library's conversion: ~10 µs
        return self._context


class Reads:
    """The events as every filter reading the same fields sees them: one per projection in
    the process, so 20 instances whose filters read the same fields convert each event once
    (``of``), and evaluate once per distinct values (``EventFilter.results``)."""

    def __init__(self, projection: Projection | None) -> None:
        self.projection = projection
        self._by_event: dict[str, Values] = {}  # event id -> its values
        self._interned: dict[Any, Values] = {}  # what is read -> the one Values
        self._batches: dict[int, tuple[Sequence[StoredLike], list[Values]]] = {}
        self._row: tuple[str, ...] = ()  # the fields the store assigned that are read
        self._body: Callable[[Any], tuple[Any, ...]] | None = None  # what is read of the body
        if projection is not None:
            self._row = tuple(name for name in projection if name in ROW)
            body = {name: sub for name, sub in projection.items() if name not in ROW}
            if body:
                self._body = _key_function(EVENT, body)

    def of(self, batch: Sequence[StoredLike]) -> list[Values]:
        """Each event's values, in the batch's order. Runners standing at the same place
        are handed the same batch (``alert_server.reads``): after the first, its answer is
        one lookup for the whole batch (the batch is kept with it, so its id stays its own)."""
        kept = self._batches.get(id(batch))
        if kept is not None and kept[0] is batch and len(kept[1]) == len(batch):
            return kept[1]
        known = self._by_event.get
        values = [known(stored.id) or self._convert(stored) for stored in batch]
        if len(self._batches) >= _BATCHES:
            del self._batches[next(iter(self._batches))]
        self._batches[id(batch)] = (batch, values)
        return values

    def _convert(self, stored: StoredLike) -> Values:
        if self.projection is None:  # the whole event, id included: never the same twice
            values = Values(stored_view(stored))
        else:
            msg = None if self._body is None else event_pb2.ListenerEvent.FromString(stored.body)
            read = (
                tuple([getattr(stored, name) for name in self._row]),
                None if msg is None or self._body is None else self._body(msg),
            )
            found = self._interned.get(read)
            if found is None:  # new values: only now the view the library is given
                if len(self._interned) >= _CACHE_SIZE:
                    self._interned.clear()
                view = stored_view(stored, self.projection, msg)
                found = self._interned[read] = Values(view)
            values = found
        if len(self._by_event) >= _CACHE_SIZE:
            self._by_event.clear()
        self._by_event[stored.id] = values
        return values


def _key_function(desc: Descriptor, projection: Projection) -> Callable[[Any], tuple[Any, ...]]:
    """A function of a message giving what ``projection`` reads of it as a tuple: equal
    tuples, equal views (and so equal results), without building the view."""
    steps: list[tuple[str, bool, Any, Callable[[Any], tuple[Any, ...]] | None]] = []
    for name, sub in projection.items():
        field = desc.fields_by_name[name]
        oneof = field.containing_oneof is not None
        if sub is not FULL:
            steps.append((name, oneof, None, _key_function(field.message_type, sub)))  # type: ignore[arg-type]
        elif field.message_type is None and not field.is_repeated:
            steps.append((name, oneof, None, None))  # a scalar: its value as it is
        else:
            steps.append((name, oneof, field, None))  # a list, a timestamp, a whole message

    def key(msg: Any) -> tuple[Any, ...]:
        out = []
        for name, oneof, field, inner in steps:
            if oneof and not msg.HasField(name):
                out.append(_ABSENT)
            elif inner is not None:
                out.append(inner(getattr(msg, name)))
            elif field is None:
                out.append(getattr(msg, name))
            else:
                out.append(freeze(value_of(field, getattr(msg, name))))
        return tuple(out)

    return key


_reads: dict[str, Reads] = {}


def reads_for(projection: Projection | None) -> Reads:
    """The one :class:`Reads` of the process for this projection."""
    key = repr(projection)
    found = _reads.get(key)
    if found is None:
        found = _reads[key] = Reads(projection)
    return found
