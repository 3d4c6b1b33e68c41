"""Content filters: a CEL expression over ``event`` choosing which events reach an instance.

The contract (DESIGN §13): one variable, ``event``, the ``listener.v1.ListenerEvent`` under its
proto field names (``event.type`` is the enum's number, ``event.task_fail.project_name``,
timestamps as CEL timestamps); only the payload actually set is present, so
``event.task_fail.x`` on a workflow event is a run-time error: write ``has(event.task_fail)``.
Every other field is there with its default, and ``has()`` on it follows CEL's proto3 rules
(set when not the default: :mod:`.presence`).

CEL implementation: ``common-expression-language`` (module ``cel``, Rust-backed), not
``cel-python`` (``celpy``). Measured on this workload (a three-clause filter over a task
event, one core of the 2-core machine, 2026-11-30): ``cel`` about 95,000 evaluations/s
converting the event each time, 600,000 on a converted one; ``celpy`` 0.5 about 1,600/s
(2,500); at 20 filtered instances ``celpy`` alone would cap delivery near 80 events/s.
Both parse standard CEL (macros, ``has``, string functions, timestamps); neither has a
checker for protobuf schemas, so :func:`compile_filter` checks the expression here.
Compiled once per instance (API server at create/update, alert server when the
runner starts).

One module per job, each importing only the ones before it:

- ``errors``: :class:`FilterError` (at compile time) and :class:`FilterRuntimeError` (on one
  event);
- ``text``: positions, string literals blanked, path steps;
- ``view``: the ``event`` variable from a message or a stored event, whole or projected, and
  the library's context;
- ``reads``: what the filters reading the same fields read of each event, converted once per
  process and interned (:class:`Reads`, :class:`Values`);
- ``evaluate``: :class:`EventFilter`, the compiled filter with its known results;
- ``presence``: the compile-time rewrite of ``has(event.a.b)``;
- ``compiler``: :func:`compile_filter` and its checks.

Callers import from this package only.
"""

from __future__ import annotations

from listener_core.event_filter.compiler import MAX_LENGTH, compile_filter
from listener_core.event_filter.errors import FilterError, FilterRuntimeError
from listener_core.event_filter.evaluate import EventFilter
from listener_core.event_filter.reads import Reads, Values
from listener_core.event_filter.view import (
    FULL,
    Projection,
    StoredLike,
    context,
    event_view,
    stored_view,
)

__all__ = [
    "FULL",
    "MAX_LENGTH",
    "EventFilter",
    "FilterError",
    "FilterRuntimeError",
    "Projection",
    "Reads",
    "StoredLike",
    "Values",
    "compile_filter",
    "context",
    "event_view",
    "stored_view",
]
