"""Request checks shared by the services."""

from __future__ import annotations

from collections.abc import Iterable

from listener_core import errors


def mask_paths(paths: Iterable[str], allowed: set[str], *, default_all: bool = False) -> set[str]:
    """The update_mask's paths; unknown ones are the caller's error."""
    chosen = set(paths) or (set(allowed) if default_all else set())
    unknown = chosen - allowed
    if unknown:
        raise errors.InvalidArgument(
            f"update_mask paths {sorted(unknown)} cannot be updated; allowed: {sorted(allowed)}",
            field_violations=[("update_mask", f"unknown path {p}") for p in sorted(unknown)],
        )
    return chosen
