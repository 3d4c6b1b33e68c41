"""Names built from an event's fields: a NATS subject, a RabbitMQ routing key, a topic.

A plugin lets operators write ``listener.{type}.{project_name}``; these helpers check such a
template when an instance is configured and fill it in per event, the same way in every
plugin: ``{type}`` is lower case (``task_fail``), each value becomes one token (the plugin's
separator and wildcard characters replaced by ``_``), and a field this event type lacks, or
an empty one, renders as ``_``.
"""

from __future__ import annotations

import dataclasses
import functools
import string
from collections.abc import Mapping
from typing import Any

from listener_common import events

__all__ = ["TEMPLATE_FIELDS", "check_template", "render_template"]

#: Every field an event's ``to_dict()`` may have: what a template may name.
TEMPLATE_FIELDS = frozenset(
    {"type"} | {f.name for cls in events.EVENT_CLASSES.values() for f in dataclasses.fields(cls)}
)


@functools.cache
def _table(unsafe: str) -> dict[int, str]:
    return str.maketrans(dict.fromkeys(unsafe, "_"))


def _token(value: Any, unsafe: str) -> str:
    text = "" if value is None else str(value)
    return text.translate(_table(unsafe)) or "_"


class _Missing(dict[str, str]):
    """Fields another event type has but this one lacks render as ``_``."""

    def __missing__(self, key: str) -> str:
        return "_"


def render_template(template: str, data: Mapping[str, Any], unsafe: str = "") -> str:
    """Formats ``template`` from an event dict (``event.to_dict()``); every character of
    ``unsafe`` in a value becomes ``_``."""
    fields = {name: _token(value, unsafe) for name, value in data.items()}
    fields["type"] = _token(str(data.get("type", "")).lower(), unsafe)
    return template.format_map(_Missing(fields))


def check_template(template: str, what: str, unsafe: str = "") -> str:
    """Raises ValueError (its message starts ``{what} template …``) for a template naming a
    field no event has (a typo would silently give ``_``) or one that cannot format text
    values; returns it rendered with every field ``_``, for the plugin's own checks."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"{what} template {template!r}: {exc}") from None
    for name in names:
        if name not in TEMPLATE_FIELDS:
            raise ValueError(
                f"{what} template {template!r} names unknown field {{{name}}}; "
                f"known fields: {', '.join(sorted(TEMPLATE_FIELDS))}"
            )
    try:  # values are text: a numeric format spec such as {sequence:05d} cannot work
        return render_template(template, {}, unsafe)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} template {template!r}: {exc}") from None
