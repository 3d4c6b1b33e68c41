"""The HTTP routes of the public API, read from the ``google.api.http`` annotations (AIP-127).

Nothing here knows a method by name: every route comes from a method's annotation in the
descriptors, so a new RPC with an annotation is served (and documented in the OpenAPI file)
without touching this package. The template grammar is the one of ``google/api/http.proto``
(``/v1/{name=plugins/*}:verb``), for the subset the protos use: literal segments, ``*``,
``**`` as the last segment, variables over them, and a final ``:verb``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor, MethodDescriptor

from listener.v1 import caller_pb2, event_service_pb2, listener_instance_pb2, plugin_pb2

#: The files whose services the API server offers over HTTP.
PUBLIC_FILES: tuple[FileDescriptor, ...] = (
    plugin_pb2.DESCRIPTOR,
    listener_instance_pb2.DESCRIPTOR,
    event_service_pb2.DESCRIPTOR,
    caller_pb2.DESCRIPTOR,
)

_VERBS = ("get", "put", "post", "delete", "patch")
#: Where googleapis-common-protos keeps google/api/*.proto (protoc's include path for them).
GOOGLEAPIS_INCLUDE = Path(annotations_pb2.__file__).parents[2]


class TemplateError(ValueError):
    """An annotation's path template this gateway cannot serve (a bug in the protos)."""


@dataclass(frozen=True)
class Segment:
    """One path segment: a literal, ``*`` (one segment) or ``**`` (the rest)."""

    text: str

    @property
    def wildcard(self) -> bool:
        return self.text in ("*", "**")


@dataclass(frozen=True)
class Variable:
    """A field bound to a run of segments: ``{name=plugins/*}`` binds two segments."""

    field_path: tuple[str, ...]
    start: int
    end: int  # exclusive; -1 when the variable ends with ``**``


@dataclass(frozen=True)
class Template:
    text: str
    segments: tuple[Segment, ...]
    variables: tuple[Variable, ...]
    verb: str

    @classmethod
    def parse(cls, text: str) -> Template:
        if not text.startswith("/"):
            raise TemplateError(f"path template {text!r} must start with '/'")
        body, verb = text[1:], ""
        last = body.rsplit("/", 1)[-1]
        if ":" in last and "}" not in last.rsplit(":", 1)[1]:
            body, verb = body.rsplit(":", 1)
        segments: list[Segment] = []
        variables: list[Variable] = []
        for token in re.findall(r"\{[^}]*\}|[^/]+", body):
            if token.startswith("{"):
                field, _, pattern = token[1:-1].partition("=")
                parts = (pattern or "*").split("/")
                start = len(segments)
                segments.extend(Segment(p) for p in parts)
                end = -1 if parts[-1] == "**" else len(segments)
                variables.append(Variable(tuple(field.split(".")), start, end))
            else:
                segments.append(Segment(token))
        if any(s.text == "**" for s in segments[:-1]):
            raise TemplateError(f"path template {text!r}: '**' must be the last segment")
        return cls(text, tuple(segments), tuple(variables), verb)

    def match(self, raw_path: str) -> dict[tuple[str, ...], str] | None:
        """The variables' values if ``raw_path`` (still percent-encoded) fits, else None."""
        if not raw_path.startswith("/"):
            return None
        path = raw_path[1:]
        if self.verb:
            if not path.endswith(":" + self.verb):
                return None
            path = path[: -len(self.verb) - 1]
        parts = path.split("/")
        if not self.verb and ":" in parts[-1]:
            return None  # a custom method's path never matches a plain one
        open_end = bool(self.segments) and self.segments[-1].text == "**"
        fixed = len(self.segments) - (1 if open_end else 0)
        if len(parts) < fixed or (not open_end and len(parts) != fixed):
            return None
        decoded = [unquote(p) for p in parts]
        for segment, part in zip(self.segments[:fixed], decoded, strict=False):
            if segment.text == "*":
                if not part:
                    return None
            elif segment.text != part:
                return None
        found: dict[tuple[str, ...], str] = {}
        for variable in self.variables:
            end = len(decoded) if variable.end == -1 else variable.end
            found[variable.field_path] = "/".join(decoded[variable.start : end])
        return found

    def openapi_path(self) -> tuple[str, dict[str, str]]:
        """The path in OpenAPI form (``/v1/plugins/{plugin}``) and each parameter's field.

        OpenAPI parameters are single segments, so ``{name=plugins/*}`` becomes the literal
        ``plugins`` and a parameter for the id (named after the collection's singular).
        """
        out: list[str] = []
        params: dict[str, str] = {}
        bound = {v.start: v for v in self.variables}
        index = 0
        while index < len(self.segments):
            variable = bound.get(index)
            if variable is None:
                out.append(self.segments[index].text)
                index += 1
                continue
            end = len(self.segments) if variable.end == -1 else variable.end
            for position in range(variable.start, end):
                segment = self.segments[position]
                if not segment.wildcard:
                    out.append(segment.text)
                    continue
                previous = self.segments[position - 1].text if position else "id"
                param = _singular(previous) if previous != "id" else "id"
                params[param] = ".".join(variable.field_path)
                out.append("{" + param + "}")
            index = end
        return "/" + "/".join(out) + (":" + self.verb if self.verb else ""), params


def _singular(collection: str) -> str:
    name = collection[:-1] if collection.endswith("s") else collection
    return name + "Id"


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one RPC."""

    grpc_method: str  # "/listener.v1.PluginService/GetPlugin"
    method: MethodDescriptor
    http_method: str  # "GET", "POST", …
    template: Template
    body: str  # "", "*" or a top-level field name

    @property
    def input(self) -> Descriptor:
        return self.method.input_type

    @property
    def output(self) -> Descriptor:
        return self.method.output_type

    @property
    def client_streaming(self) -> bool:
        return bool(self.method.client_streaming)

    @property
    def body_field(self) -> FieldDescriptor | None:
        if self.body in ("", "*"):
            return None
        return self.input.fields_by_name[self.body]

    @property
    def raw_body(self) -> bool:
        """The HTTP body is one ``bytes`` field's content, not JSON (a package upload)."""
        field = self.body_field
        return field is not None and field.type == FieldDescriptor.TYPE_BYTES

    @property
    def path_fields(self) -> frozenset[tuple[str, ...]]:
        return frozenset(v.field_path for v in self.template.variables)


def _bindings(rule: http_pb2.HttpRule) -> Iterator[tuple[str, str, str]]:
    kind = rule.WhichOneof("pattern")
    if kind in _VERBS:
        yield kind.upper(), getattr(rule, kind), rule.body
    elif kind == "custom":
        yield rule.custom.kind.upper(), rule.custom.path, rule.body
    for extra in rule.additional_bindings:
        yield from _bindings(extra)


def routes(files: Iterable[FileDescriptor] = PUBLIC_FILES) -> list[Route]:
    """Every annotated method's routes, in declaration order; checks each annotation."""
    found: list[Route] = []
    for file in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http):
                    continue
                rule = options.Extensions[annotations_pb2.http]
                for verb, path, body in _bindings(rule):
                    template = Template.parse(path)
                    route = Route(
                        f"/{service.full_name}/{method.name}", method, verb, template, body
                    )
                    _check(route)
                    found.append(route)
    return found


def _check(route: Route) -> None:
    for path in route.path_fields:
        descriptor: Descriptor | None = route.input
        field: FieldDescriptor | None = None
        for part in path:
            field = descriptor.fields_by_name.get(part) if descriptor is not None else None
            if field is None:
                raise TemplateError(f"{route.grpc_method}: no field {'.'.join(path)}")
            descriptor = field.message_type
        if field is None or field.type != FieldDescriptor.TYPE_STRING:
            raise TemplateError(f"{route.grpc_method}: {'.'.join(path)} is not a string")
    if route.body not in ("", "*") and route.body not in route.input.fields_by_name:
        raise TemplateError(f"{route.grpc_method}: no body field {route.body}")
    if route.client_streaming and not route.raw_body:
        raise TemplateError(f"{route.grpc_method}: a streaming request needs a bytes body field")
