"""``has()`` on event fields as CEL defines it for proto3 messages, by rewriting the
expression at compile time (:func:`with_presence`)."""

from __future__ import annotations

import re

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from listener_core.event_filter.text import STEP, blank_strings
from listener_core.event_filter.view import EVENT

_HAS_PATH = re.compile(r"(?<![\w.])has\s*\(\s*event((?:\s*\.\s*[A-Za-z_]\w*)+)\s*\)")
_EPOCH_CEL = 'timestamp("1970-01-01T00:00:00Z")'


def with_presence(text: str) -> str:
    """The expression with ``has()`` on event fields as CEL defines it for proto3 messages.

    The library is given the event as a map with every field, defaults included (so that
    ``event.task_fail.host == ""`` works), where ``has()`` only asks whether a key is there:
    always, for a field that is not a payload. CEL's protobuf semantics, which these
    expressions follow: a field without presence of its own (a string, a number, a bool, an
    enum, a list) is set when it is not its default (``""``, ``0``, ``false``, empty); a
    timestamp when it is not the epoch (an unset one reads as the epoch); a payload when it
    is the one the event carries, including on the way to a field
    (``has(event.task_fail.host)`` is false on a workflow event, not an error). So each
    ``has(event.a.b)`` becomes that test; string literals are left alone, and ``has()`` on
    anything but an ``event.…`` path (a macro's variable) keeps the library's meaning."""
    code = blank_strings(text)
    out: list[str] = []
    last = 0
    for match in _HAS_PATH.finditer(code):
        test = _presence_test([step.group(1) for step in STEP.finditer(match.group(1))])
        if test is not None:
            out += [text[last : match.start()], test]
            last = match.end()
    return "".join([*out, text[last:]])


def _presence_test(names: list[str]) -> str | None:
    """The CEL test for ``has(event.<names>)``; None when the library's own ``has()`` is
    right (a payload) or the path is not the schema's (its error comes from the path check)."""
    desc: Descriptor | None = EVENT
    path = "event"
    guards: list[str] = []
    for i, name in enumerate(names):
        field = desc.fields_by_name.get(name) if desc is not None else None
        if field is None:
            return None
        path += f".{name}"
        last = i == len(names) - 1
        if field.containing_oneof is not None:  # a payload: there only when it is the one
            if last:
                return None
            guards.append(f"has({path})")
            desc = field.message_type
            continue
        if not last:
            return None  # a field of a timestamp or a list: not the schema's to say
        return "(" + " && ".join([*guards, _set_test(field, path)]) + ")"
    return None


def _set_test(field: FieldDescriptor, path: str) -> str:
    """The CEL test that a field without presence of its own is set (not its default)."""
    if field.is_repeated:
        return f"size({path}) != 0"
    if field.message_type is not None:
        return f"{path} != {_EPOCH_CEL}"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return path
    if field.type == FieldDescriptor.TYPE_STRING:
        return f'{path} != ""'
    if field.type == FieldDescriptor.TYPE_BYTES:
        return f'{path} != b""'
    if field.cpp_type in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return f"{path} != 0.0"
    return f"{path} != 0"  # integers and enums (numbers in the view, unsigned ones too)
