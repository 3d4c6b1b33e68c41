"""Writes ``api_server/http/openapi.json``: the OpenAPI 3.1 document of the HTTP/JSON API.

Generated from the protos at build time (``make proto`` / ``make openapi``), committed, and
checked for freshness in CI like the generated code. Paths come from the same annotations the
gateway serves (:mod:`api_server.http.routes`), schemas from the message descriptors, and
descriptions from the protos' comments (read with ``protoc --include_source_info``).

    python -m api_server.http.openapi_gen [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from api_server.http import routes as routing
from api_server.http.gateway import OPENAPI_FILE

REPO = Path(__file__).resolve().parents[2]
STATUS = "google.rpc.Status"
_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
_INT32 = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_SFIXED32,
}
#: Well-known types, as their JSON mapping writes them.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated field paths (lowerCamelCase or snake_case).",
    },
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
}


def comments(proto_root: Path) -> dict[str, str]:
    """Leading comments of messages, fields, enums, services and methods, by full name."""
    files = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    include = routing.GOOGLEAPIS_INCLUDE
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{proto_root}",
                f"-I{include}",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *files,
            ],
            check=True,
        )
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    found: dict[str, str] = {}
    for file in fds.file:
        names: dict[tuple[int, ...], str] = {}

        for i, msg in enumerate(file.message_type):
            _walk_message(names, msg, (4, i), file.package)
        for i, enum in enumerate(file.enum_type):
            names[(5, i)] = f"{file.package}.{enum.name}"
        for i, service in enumerate(file.service):
            names[(6, i)] = f"{file.package}.{service.name}"
            for j, method in enumerate(service.method):
                names[(6, i, 2, j)] = f"{file.package}.{service.name}.{method.name}"
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            text = " ".join(line.strip() for line in location.leading_comments.splitlines())
            if name and text.strip():
                found[name] = text.strip()
    return found


def _walk_message(
    names: dict[tuple[int, ...], str], msg: Any, path: tuple[int, ...], prefix: str
) -> None:
    """Names the source-info paths (``4, i, 2, j`` = field j of message i) of a message."""
    full = f"{prefix}.{msg.name}"
    names[path] = full
    for i, field in enumerate(msg.field):
        names[(*path, 2, i)] = f"{full}.{field.name}"
    for i, nested in enumerate(msg.nested_type):
        _walk_message(names, nested, (*path, 3, i), full)
    for i, enum in enumerate(msg.enum_type):
        names[(*path, 4, i)] = f"{full}.{enum.name}"


class Builder:
    def __init__(self, docs: dict[str, str]) -> None:
        self.docs = docs
        self.schemas: dict[str, Any] = {}

    def ref(self, descriptor: Descriptor) -> dict[str, Any]:
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        self.message(descriptor)
        return {"$ref": f"#/components/schemas/{descriptor.full_name}"}

    def enum(self, enum: EnumDescriptor) -> dict[str, Any]:
        name = enum.full_name
        if name not in self.schemas:
            schema: dict[str, Any] = {
                "type": "string",
                "enum": [v.name for v in enum.values],
                "description": _join(
                    self.docs.get(name),
                    "Written with its full names; accepted also without the type's prefix "
                    "and as numbers.",
                ),
            }
            self.schemas[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            value = message.fields_by_name["value"]
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self.scalar(value)}
        elif field.is_repeated:
            schema = {"type": "array", "items": self.scalar(field)}
        else:
            schema = self.scalar(field)
        doc = self.docs.get(field.full_name)
        if doc:
            schema = (
                {**schema, "description": doc}
                if "$ref" not in schema
                else {
                    "allOf": [schema],
                    "description": doc,
                }
            )
        return schema

    def scalar(self, field: FieldDescriptor) -> dict[str, Any]:
        kind = field.type
        if field.message_type is not None:
            return self.ref(field.message_type)
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        if kind in _INT64:
            return {"type": ["string", "integer"], "format": "int64"}
        if kind in _INT32:
            return {"type": "integer", "format": "int32"}
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return {"type": "number"}
        if kind == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": "string"}

    def message(self, descriptor: Descriptor) -> None:
        name = descriptor.full_name
        if name in self.schemas:
            return
        schema: dict[str, Any] = {"type": "object", "properties": {}}
        self.schemas[name] = schema  # before the fields: messages may refer to themselves
        if name in self.docs:
            schema["description"] = self.docs[name]
        for field in descriptor.fields:
            schema["properties"][field.json_name] = self.field(field)
        schema["additionalProperties"] = False


def _join(*parts: str | None) -> str:
    return " ".join(p for p in parts if p)


def error_schemas() -> dict[str, Any]:
    any_ref = {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    }
    return {
        STATUS: {
            "type": "object",
            "description": "Every error: the gRPC code, a message, and details such as "
            "google.rpc.ErrorInfo (a reason) and google.rpc.BadRequest (field violations).",
            "properties": {
                "code": {"type": "integer", "format": "int32", "description": "gRPC code."},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/google.rpc.ErrorInfo"},
                            {"$ref": "#/components/schemas/google.rpc.BadRequest"},
                            any_ref,
                        ]
                    },
                },
            },
            "required": ["code", "message"],
        },
        "google.rpc.ErrorInfo": {
            "type": "object",
            "properties": {
                "@type": {"const": "type.googleapis.com/google.rpc.ErrorInfo"},
                "reason": {"type": "string"},
                "domain": {"type": "string"},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "required": ["@type"],
        },
        "google.rpc.BadRequest": {
            "type": "object",
            "properties": {
                "@type": {"const": "type.googleapis.com/google.rpc.BadRequest"},
                "fieldViolations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {"type": "string"},
                            "description": {"type": "string"},
                        },
                    },
                },
            },
            "required": ["@type"],
        },
    }


def _query_parameters(
    builder: Builder, route: routing.Route, excluded: set[str]
) -> Iterable[dict[str, Any]]:
    for field in route.input.fields:
        if field.name in excluded:
            continue
        message = field.message_type
        if message is not None and message.full_name not in _WELL_KNOWN:
            continue  # messages travel in bodies
        yield {
            "name": field.json_name,
            "in": "query",
            "required": False,
            "schema": builder.field(field),
            **({"explode": True} if field.is_repeated else {}),
        }


def _request_body(
    builder: Builder, route: routing.Route, excluded: set[str]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The operation's request body (None: it has none) and its query parameters: the
    request's fields that are neither in the path (``excluded``) nor in the body."""
    if route.raw_body:
        field = route.body_field
        assert field is not None
        body: dict[str, Any] = {
            "required": True,
            "content": {
                "application/zip": {
                    "schema": {"type": "string", "contentMediaType": "application/zip"}
                }
            },
        }
        return body, list(_query_parameters(builder, route, excluded | {field.name}))
    if route.body == "*":
        return {
            "required": False,
            "content": {"application/json": {"schema": builder.ref(route.input)}},
        }, []
    field = route.body_field
    if field is None:
        return None, list(_query_parameters(builder, route, excluded))
    body = {"required": True, "content": {"application/json": {"schema": builder.scalar(field)}}}
    return body, list(_query_parameters(builder, route, excluded | {field.name}))


def _operation(builder: Builder, route: routing.Route, docs: dict[str, str]) -> dict[str, Any]:
    _, params = route.template.openapi_path()
    parameters: list[dict[str, Any]] = [
        {
            "name": param,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": f"The id in the request's {field}.",
        }
        for param, field in params.items()
    ]
    operation: dict[str, Any] = {
        "operationId": route.method.name,
        "tags": [route.method.containing_service.name],
        "summary": docs.get(route.method.full_name, route.method.name),
        "description": f"gRPC {route.grpc_method}.",
    }
    body, query = _request_body(builder, route, {p[0] for p in route.path_fields})
    if body is not None:
        operation["requestBody"] = body
    parameters.extend(query)
    if parameters:
        operation["parameters"] = parameters
    operation["responses"] = {
        "200": {
            "description": "OK",
            "content": {"application/json": {"schema": builder.ref(route.output)}},
        },
        "default": {
            "description": "An error: the HTTP status of its gRPC code.",
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{STATUS}"}}},
        },
    }
    return operation


def document(api_routes: Iterable[routing.Route], docs: dict[str, str]) -> dict[str, Any]:
    builder = Builder(docs)
    paths: dict[str, Any] = {}
    for route in api_routes:
        path, _ = route.template.openapi_path()
        paths.setdefault(path, {})[route.http_method.lower()] = _operation(builder, route, docs)
    schemas = {**dict(sorted(builder.schemas.items())), **error_schemas()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Listener service API",
            "version": "v1",
            "description": "HTTP/JSON transcoding of the listener.v1 gRPC services "
            "(google.api.http). JSON is the proto3 JSON mapping.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }


def render() -> str:
    text = json.dumps(document(routing.routes(), comments(REPO / "protos")), indent=2)
    return text + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api_server.http.openapi_gen")
    parser.add_argument("--out", default=str(OPENAPI_FILE))
    args = parser.parse_args(argv)
    Path(args.out).write_text(render())


if __name__ == "__main__":
    main()
