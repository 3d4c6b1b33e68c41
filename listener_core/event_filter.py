"""Content filters: a CEL expression over ``event`` choosing which events reach an instance.

The contract (DESIGN §13): one variable, ``event``, the ``listener.v1.ListenerEvent`` under its
proto field names (``event.type`` is the enum's number, ``event.task_fail.project_name``,
timestamps as CEL timestamps); only the payload actually set is present, so
``event.task_fail.x`` on a workflow event is a run-time error: write ``has(event.task_fail)``.
Every other field is there with its default, and ``has()`` on it follows CEL's proto3 rules
(set when not the default: :func:`_with_presence`).

CEL implementation: ``common-expression-language`` (module ``cel``, Rust-backed), not
``cel-python`` (``celpy``). Measured on this workload (a three-clause filter over a task
event, one core of the 2-core machine, 2026-11-30): ``cel`` about 95,000 evaluations/s
converting the event each time, 600,000 on a converted one; ``celpy`` 0.5 about 1,600/s
(2,500); at 20 filtered instances ``celpy`` alone would cap delivery near 80 events/s.
Both parse standard CEL (macros, ``has``, string functions, timestamps); neither has a
checker for protobuf schemas, so :func:`compile_filter` checks the expression here: syntax
(the library's parser, with its line and column), the variables and functions it uses,
every ``event.a.b`` path against the ``ListenerEvent`` descriptor, and, by evaluating it on
an empty event of each subscribed type, that it yields a bool without a type error.
Compiled once per instance (API server at create/update, alert server when the
runner starts).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import cel
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from listener.v1 import event_pb2

_EVENT = event_pb2.ListenerEvent.DESCRIPTOR
_TIMESTAMP = "google.protobuf.Timestamp"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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
_STRING = re.compile(
    r"""[rRbB]{0,2}("""
    r'"""(?:\\.|[^\\])*?"""'
    r"|'''(?:\\.|[^\\])*?'''"
    r'|"(?:\\.|[^"\\\n])*"'
    r"|'(?:\\.|[^'\\\n])*')"
)
_PATH = re.compile(r"(?<![\w.])event((?:\s*\.\s*[A-Za-z_]\w*)+)(\s*\()?")
_STEP = re.compile(r"\s*\.\s*([A-Za-z_]\w*)")
_BARE = re.compile(r"(?<![\w.])event\b(?!\s*\.)")
_MACRO_VARIABLE = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_HAS = re.compile(r"\bhas\s*\(\s*$")
_EVENT_TYPES = {
    v.number: v.name.removeprefix("EVENT_TYPE_").lower()
    for v in event_pb2.EventType.DESCRIPTOR.values
}
_RESULTS = 10_000  # known results kept per filter
#: Longest filter accepted: longer ones are a configuration mistake, not a filter.
MAX_LENGTH = 2048


class FilterError(ValueError):
    """A filter that cannot be used; ``str()`` names the position and the reason."""


class FilterRuntimeError(Exception):
    """The filter failed on one event (a missing payload, a type error): that event's
    failure, under the instance's failure policy."""


def _position(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def _blank_strings(text: str) -> str:
    """The text with string literals' contents blanked, so paths inside them are ignored."""
    return _STRING.sub(lambda m: " " * len(m.group(0)), text)


#: A projection: field name -> the projection of its message, or FULL for the whole value.
Projection = dict[str, Any]
FULL = None


def _check_paths(text: str) -> Projection | None:
    """Checks every ``event.a.b`` path against the schema; returns the fields the expression
    reads (None when it uses ``event`` as a whole), so that only those are converted."""
    code = _blank_strings(text)
    projection: Projection | None = None if _BARE.search(code) else {}
    for match in _PATH.finditer(code):
        desc: Descriptor | None = _EVENT
        where = match.start(1)
        steps = list(_STEP.finditer(match.group(1)))
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
                    f"{_position(text, where + step.start(1))}: {desc.name} has no field {name!r}"
                )
            desc = field.message_type
            if desc is not None and (desc.full_name == _TIMESTAMP or field.is_repeated):
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
    code = _blank_strings(text)
    # A macro's own variable (``list.exists(t, t.name == "x")``) is declared by the macro.
    bound = {m.group(1) for m in _MACRO_VARIABLE.finditer(code)}
    for name in refs.get("variables", []):
        if name != "event" and name not in bound:
            at = re.search(rf"(?<![\w.]){re.escape(name)}\b", code)
            where = _position(text, at.start()) if at else "line 1, column 1"
            raise FilterError(f"{where}: undeclared reference to {name!r} (the variable is event)")
    for name in refs.get("functions", []):
        if name[:1].isalpha() and name not in _FUNCTIONS:  # "_==_", "@in": operators
            at = re.search(rf"\b{re.escape(name)}\s*\(", code)
            where = _position(text, at.start()) if at else "line 1, column 1"
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
            result = program.execute(_context(event_view(sample, projection)))
        except TypeError as exc:
            raise FilterError(f"line 1, column 1: type error on a {name} event: {exc}") from None
        except Exception:
            continue
        if not isinstance(result, bool):
            raise FilterError(
                f"line 1, column 1: the filter must yield a bool, it yields "
                f"{type(result).__name__} on a {name} event"
            )


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
            self._context = _context(self.view)  # the library's conversion: ~10 µs
        return self._context


class StoredLike(Protocol):
    """An event as the store keeps it: the body lacks the fields the store assigns."""

    @property
    def id(self) -> str: ...
    @property
    def sequence(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def publish_time(self) -> datetime: ...
    @property
    def body(self) -> bytes: ...


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
            self._row = tuple(name for name in projection if name in _ROW)
            body = {name: sub for name, sub in projection.items() if name not in _ROW}
            if body:
                self._body = _key_function(_EVENT, body)

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


_ABSENT = object()  # a payload the event does not carry


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
                out.append(_freeze(_value(field, getattr(msg, name))))
        return tuple(out)

    return key


_reads: dict[str, Reads] = {}


def _reads_for(projection: Projection | None) -> Reads:
    key = repr(projection)
    found = _reads.get(key)
    if found is None:
        found = _reads[key] = Reads(projection)
    return found


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
        """Whether the event (a context from :func:`_context`) is selected; raises
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
    rewritten = _with_presence(text)
    if rewritten != text:
        program = cel.compile(rewritten)
    _probe(text, program, types, projection)
    return EventFilter(text, program, projection, _reads_for(projection))


_HAS_PATH = re.compile(r"(?<![\w.])has\s*\(\s*event((?:\s*\.\s*[A-Za-z_]\w*)+)\s*\)")
_EPOCH_CEL = 'timestamp("1970-01-01T00:00:00Z")'


def _with_presence(text: str) -> str:
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
    code = _blank_strings(text)
    out: list[str] = []
    last = 0
    for match in _HAS_PATH.finditer(code):
        test = _presence_test([step.group(1) for step in _STEP.finditer(match.group(1))])
        if test is not None:
            out += [text[last : match.start()], test]
            last = match.end()
    return "".join([*out, text[last:]])


def _presence_test(names: list[str]) -> str | None:
    """The CEL test for ``has(event.<names>)``; None when the library's own ``has()`` is
    right (a payload) or the path is not the schema's (its error comes from _check_paths)."""
    desc: Descriptor | None = _EVENT
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
        if field.is_repeated:
            test = f"size({path}) != 0"
        elif field.message_type is not None:
            test = f"{path} != {_EPOCH_CEL}"
        elif field.type == FieldDescriptor.TYPE_BOOL:
            test = path
        elif field.type == FieldDescriptor.TYPE_STRING:
            test = f'{path} != ""'
        elif field.type == FieldDescriptor.TYPE_BYTES:
            test = f'{path} != b""'
        elif field.cpp_type in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
            test = f"{path} != 0.0"
        else:  # integers and enums (numbers in the view, unsigned ones too)
            test = f"{path} != 0"
        return "(" + " && ".join([*guards, test]) + ")"
    return None


# -- the event as the expression sees it ------------------------------------------------------


def _value(field: Any, value: Any) -> Any:
    sub = field.message_type
    if sub is None:
        return list(value) if field.is_repeated else value
    if sub.GetOptions().map_entry:
        vfield = sub.fields_by_name["value"]
        return {k: _value(vfield, v) for k, v in value.items()}
    if field.is_repeated:
        return [_message(item) for item in value]
    return _message(value)


def _project(
    msg: Message, projection: Projection, row: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The fields ``projection`` names, ``row``'s values instead of the message's."""
    out: dict[str, Any] = {}
    fields = msg.DESCRIPTOR.fields_by_name
    for name, sub in projection.items():
        if row is not None and name in row:
            out[name] = row[name]
            continue
        field = fields[name]
        if field.containing_oneof is not None and not msg.HasField(name):
            continue
        value = getattr(msg, name)
        out[name] = _value(field, value) if sub is FULL else _project(value, sub)
    return out


def _message(msg: Message) -> Any:
    if msg.DESCRIPTOR.full_name == _TIMESTAMP:
        return msg.ToDatetime(tzinfo=UTC) if msg.ByteSize() else _EPOCH  # type: ignore[attr-defined]
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        if field.containing_oneof is not None and not msg.HasField(field.name):
            continue  # only the payload actually set
        out[field.name] = _value(field, getattr(msg, field.name))
    return out


def event_view(
    msg: event_pb2.ListenerEvent, projection: Projection | None = None
) -> dict[str, Any]:
    """The ``event`` variable: every field under its proto name, proto3 defaults included,
    only the set payload, enums as numbers, timestamps as datetimes; with a projection, only
    the fields it names (what the expression reads: the library converts every field it is
    given, and that cost more than the evaluation)."""
    view: dict[str, Any] = _message(msg) if projection is None else _project(msg, projection)
    return view


def _context(view: dict[str, Any]) -> Any:
    context = cel.Context()
    context.add_variable("event", view)
    return context


def _freeze(value: Any) -> Any:
    """A hashable copy of a projected view: the key of a filter's known results."""
    if isinstance(value, dict):
        return tuple((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


#: Events (and distinct values) kept per projection: more than a few batches of every
#: runner in flight, so runners a little apart still share the conversion.
_CACHE_SIZE = 20_000
_BATCHES = 16  # recent batches and their values, per projection (as many as reads.py keeps)
_ROW = frozenset(["id", "sequence", "type", "publish_time"])


def stored_view(
    stored: StoredLike, projection: Projection | None = None, msg: Message | None = None
) -> dict[str, Any]:
    """:func:`event_view` of a stored event, with the fields the store assigned (id,
    sequence, type, publish time); the body (``msg`` when already parsed) is parsed only
    when the expression reads something of it."""
    when = stored.publish_time
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    row = {"id": stored.id, "sequence": stored.sequence, "type": stored.type, "publish_time": when}
    if projection is None:
        view: dict[str, Any] = _message(event_pb2.ListenerEvent.FromString(stored.body))
        view.update(row)
        return view
    if projection.keys() <= _ROW:
        return {name: row[name] for name in projection}
    if msg is None:
        msg = event_pb2.ListenerEvent.FromString(stored.body)
    return _project(msg, projection, row)
