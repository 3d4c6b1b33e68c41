"""The one rule for plugin names: a manifest's ``name`` and a plugin id (``plugins/{id}``).

A manifest's name is the default plugin id, so the two must follow the same rule: otherwise a
package builds and is then refused at install (``my_types`` was). The builder, the loader and
the API server all call :func:`name_problem`, and every refusal quotes :data:`NAME_RULE`.
"""

from __future__ import annotations

import re

__all__ = ["NAME_PATTERN", "NAME_RULE", "name_problem"]

#: AIP-122 resource ids: lower case, digits and '-', as in ``plugins/{id}``.
NAME_PATTERN = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
NAME_RULE = (
    "1-63 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-' "
    f"(^{NAME_PATTERN.pattern}$)"
)


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid plugin name or id, or None when it is."""
    # fullmatch: "$" would also accept a trailing newline.
    if NAME_PATTERN.fullmatch(name):
        return None
    shown = name if len(name) <= 80 else name[:80] + "…"
    return f"{shown!r} is not a valid plugin name: {NAME_RULE}"
