"""The two ways a content filter fails: at compile time (the instance is refused) or on one
event (that event's failure, under the instance's failure policy)."""

from __future__ import annotations


class FilterError(ValueError):
    """A filter that cannot be used; ``str()`` names the position and the reason."""


class FilterRuntimeError(Exception):
    """The filter failed on one event (a missing payload, a type error): that event's
    failure, under the instance's failure policy."""
