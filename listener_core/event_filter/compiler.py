"""Compiling a filter: the library's parser (syntax errors with its line and column), then
the checks the library has no schema for: the variables and functions the expression uses,
every ``event.a.b`` path against the ``ListenerEvent`` descriptor (which also gives the
projection, the fields it reads), and, by evaluating it on an empty event of each subscribed
type, that it yields a bool without a type error. ``has()`` is rewritten
(:mod:`.presence`) before the probe, so the probe runs the program that will be used."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import cel
from google.protobuf.descriptor import Descriptor

from listener import event_types
from listener.v1 import event_pb2
from listener_core.event_filter.errors import FilterError
from listener_core.event_filter.evaluate import EventFilter
from listener_core.event_filter.presence import with_presence
from listener_core.event_filter.reads import reads_for
from listener_core.event_filter.text import STEP, blank_strings, position
from listener_core.event_filter.view import EVENT, FULL, TIMESTAMP, Projection, context, event_view

#: Functions and macros of standard CEL the library evaluates (operators are ``_x_``).
_FUNCTIONS = frozenset(
    [
        "size",
        "has",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "bool",
        "timestamp",
        "duration",
        "type",
        "dyn",
        "all",
        "exists",
        "exists_one",
        "map",
        "filter",
        "max",
        "min",
        "lowerAscii",
        "upperAscii",
        "trim",
        "split",
        "join",
        "replace",
        "substring",
        "indexOf",
        "lastIndexOf",
        "charAt",
        "getDate",
        "getDayOfMonth",
        "getDayOfWeek",
        "getDayOfYear",
        "getFullYear",
        "getHours",
        "getMilliseconds",
        "getMinutes",
        "getMonth",
        "getSeconds",
    ]
)
_SYNTAX = re.compile(r"<input>:(\d+):(\d+): (.*?)(?:\n|$)")
_PATH = re.compile(r"(?<![\w.])event((?:\s*\.\s*[A-Za-z_]\w*)+)(\s*\()?")
_BARE = re.compile(r"(?<![\w.])event\b(?!\s*\.)")
_MACRO_VARIABLE = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_HAS = re.compile(r"\bhas\s*\(\s*$")
#: EventType number -> its payload field's name (``task_fail``), as the probe sets it.
_EVENT_TYPES = {number: name.lower() for number, name in event_types.NAMES.items()}
#: Longest filter accepted: longer ones are a configuration mistake, not a filter.
MAX_LENGTH = 2048


def compile_filter(text: str, types: Iterable[int] = ()) -> EventFilter | None:
    """The compiled filter, None for an empty one; FilterError when it cannot be used."""
    if not text.strip():
        return None
    if len(text) > MAX_LENGTH:
        raise FilterError(f"line 1, column 1: longer than {MAX_LENGTH} characters")
    try:
        program = cel.compile(text)
    except Exception as exc:
        found = _SYNTAX.search(str(exc))
        if found is None:
            raise FilterError(f"line 1, column 1: {exc}") from None
        line, column, reason = found.groups()
        raise FilterError(f"line {line}, column {column}: {reason}") from None
    _check_names(text, program)
    projection = _check_paths(text)
    rewritten = with_presence(text)
    if rewritten != text:
        program = cel.compile(rewritten)
    _probe(text, program, types, projection)
    return EventFilter(text, program, projection, reads_for(projection))


def _check_paths(text: str) -> Projection | None:
    """Checks every ``event.a.b`` path against the schema; returns the fields the expression
    reads (None when it uses ``event`` as a whole), so that only those are converted."""
    code = blank_strings(text)
    projection: Projection | None = None if _BARE.search(code) else {}
    for match in _PATH.finditer(code):
        desc: Descriptor | None = EVENT
        where = match.start(1)
        steps = list(STEP.finditer(match.group(1)))
        if match.group(2) is not None:
            steps = steps[:-1]  # a method call: x.startsWith(…)
        presence = bool(_HAS.search(code, 0, match.start()))
        node = projection
        for i, step in enumerate(steps):
            name = step.group(1)
            if desc is None:
                break  # inside a value (a map's keys, a timestamp): not schema fields
            field = desc.fields_by_name.get(name)
            if field is None:
                raise FilterError(
                    f"{position(text, where + step.start(1))}: {desc.name} has no field {name!r}"
                )
            desc = field.message_type
            if desc is not None and (desc.full_name == TIMESTAMP or field.is_repeated):
                desc = None  # a timestamp, a list or a map: what follows is not a field
            if node is None:
                continue
            last = i == len(steps) - 1
            if desc is None or (last and not presence):
                node[name] = FULL  # a value, or a message used as a whole
                node = None
            elif name in node and node[name] is FULL:
                node = None
            else:  # has(event.x) needs x's presence only; deeper steps add their fields
                node = node.setdefault(name, {})
    return projection


def _check_names(text: str, program: Any) -> None:
    refs = program.references()
    code = blank_strings(text)
    # A macro's own variable (``list.exists(t, t.name == "x")``) is declared by the macro.
    bound = {m.group(1) for m in _MACRO_VARIABLE.finditer(code)}
    for name in refs.get("variables", []):
        if name != "event" and name not in bound:
            at = re.search(rf"(?<![\w.]){re.escape(name)}\b", code)
            where = position(text, at.start()) if at else "line 1, column 1"
            raise FilterError(f"{where}: undeclared reference to {name!r} (the variable is event)")
    for name in refs.get("functions", []):
        if name[:1].isalpha() and name not in _FUNCTIONS:  # "_==_", "@in": operators
            at = re.search(rf"\b{re.escape(name)}\s*\(", code)
            where = position(text, at.start()) if at else "line 1, column 1"
            raise FilterError(f"{where}: unknown function {name!r}")


def _probe(text: str, program: Any, types: Iterable[int], projection: Projection | None) -> None:
    """Evaluates the filter on an empty event of each type: the result must be a bool, and
    type errors are the expression's. A missing payload or a value-dependent error (an
    integer parsed from an empty string) may be fine on real events, so they pass."""
    for number in types:
        name = _EVENT_TYPES[number]
        sample = event_pb2.ListenerEvent(type=number)  # type: ignore[arg-type]
        getattr(sample, name).SetInParent()
        try:
            result = program.execute(context(event_view(sample, projection)))
        except TypeError as exc:
            raise FilterError(f"line 1, column 1: type error on a {name} event: {exc}") from None
        except Exception:
            continue
        if not isinstance(result, bool):
            raise FilterError(
                f"line 1, column 1: the filter must yield a bool, it yields "
                f"{type(result).__name__} on a {name} event"
            )
