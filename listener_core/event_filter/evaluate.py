"""A compiled filter and its evaluation: the library's program, the :class:`Reads` it shares
with the filters reading the same fields, and its known results by :class:`Values`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from listener_core.event_filter.errors import FilterRuntimeError
from listener_core.event_filter.reads import Reads, Values
from listener_core.event_filter.view import Projection

_RESULTS = 10_000  # known results kept per filter


@dataclass(frozen=True)
class EventFilter:
    text: str
    program: Any
    # The fields the expression reads (None: all): filters reading the same fields share
    # one converted event (``reads``).
    projection: Projection | None
    reads: Reads = dataclasses.field(compare=False, repr=False)
    # Results by the values the expression reads: CEL is a pure function of them, and event
    # streams repeat their projects, workflows and task names, so most events need no call
    # into the library (which costs as much as the rest of a delivery).
    results: dict[Values, bool] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def evaluate(self, values: Values) -> bool:
        """Whether events with these values are selected (the result is kept); raises
        FilterRuntimeError when the expression fails on them (never kept)."""
        result = self.matches(values.context())
        if len(self.results) >= _RESULTS:
            self.results.clear()
        self.results[values] = result
        return result

    def matches(self, context: Any) -> bool:
        """Whether the event (a context from :func:`view.context`) is selected; raises
        FilterRuntimeError when the expression fails on it."""
        try:
            result = self.program.execute(context)
        except Exception as exc:
            reason = str(exc).split(". Check", 1)[0]
            if isinstance(exc, KeyError):
                reason = f"no field {reason} in this event"
            raise FilterRuntimeError(f"filter failed: {reason}") from None
        if not isinstance(result, bool):
            raise FilterRuntimeError(f"filter yielded {type(result).__name__}, not a bool")
        return result
