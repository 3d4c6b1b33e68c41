"""Between HTTP and messages: a request message from a route's path, query and JSON body, and
proto3 JSON (plus ``google.rpc.Status`` bodies) back.

JSON is the proto3 JSON mapping of ``google.protobuf.json_format``: lowerCamelCase out, both
lowerCamelCase and the proto's snake_case names in. On top of it, an enum value may be given
without its type's prefix (``TASK_FAIL`` for ``EVENT_TYPE_TASK_FAIL``, ``PARK`` for
``MODE_PARK``), as ``listenerctl`` accepts it.

Every refusal here is an :class:`listener_core.errors.InvalidArgument` naming the field; the
gateway hands it to the API's own interceptors, so it is counted and answered like gRPC's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # noqa: F401 - registers the detail types

from listener_core import errors

#: gRPC code → HTTP status: the mapping issue #15 fixed for this API (400/401/403/404/409/412/
#: 429/499/500/503/504). It is Google's (google/rpc/code.proto) except that FAILED_PRECONDITION
#: answers 412 Precondition Failed, which names what happened (an instance still uses the
#: plugin, a replay past retention) better than a bare 400; the body's ``code`` is the gRPC one.
HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

_OPAQUE = frozenset(
    {
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.Empty",
        "google.protobuf.Any",
    }
)


_FIELD_MASK = "google.protobuf.FieldMask"


def http_status(code: int) -> int:
    """The HTTP status of a gRPC status code number."""
    return HTTP_STATUS.get(_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN), 500)


def bad_request(message: str, field: str = "", *, reason: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(
        message,
        reason=reason,
        field_violations=[(field, message)] if field else [],
    )


def parse_json(body: bytes) -> Any:
    """The JSON document of a body; an empty body is ``{}``."""
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise bad_request("the body is not UTF-8 text", reason="MALFORMED_JSON") from None
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            reason="MALFORMED_JSON",
        ) from None
    except (ValueError, RecursionError) as exc:  # a number too long to convert; deep nesting
        raise bad_request(
            f"the body is not acceptable JSON: {type(exc).__name__}", reason="MALFORMED_JSON"
        ) from None


def _fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    by_name: dict[str, FieldDescriptor] = {}
    for field in descriptor.fields:
        by_name[field.name] = field
        by_name[field.json_name] = field
    return by_name


def _enum_prefix(enum: EnumDescriptor) -> str:
    """``EVENT_TYPE_`` for EventType, ``MODE_`` for FailurePolicy.Mode."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def _enum_value(enum: EnumDescriptor, value: Any) -> Any:
    if not isinstance(value, str) or value in enum.values_by_name:
        return value
    name = value.strip().upper()
    for candidate in (name, _enum_prefix(enum) + name):
        if candidate in enum.values_by_name:
            return candidate
    return value  # json_format names the value it does not know


def expand_enums(descriptor: Descriptor, data: Any) -> Any:
    """``data`` with short enum names (``TASK_FAIL``) replaced by full ones, recursively."""
    if not isinstance(data, dict) or descriptor.full_name in _OPAQUE:
        return data
    fields = _fields(descriptor)
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            out[key] = value
            continue
        repeated = field.is_repeated
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if isinstance(value, dict):
                value = {k: _convert_one(value_field, v) for k, v in value.items()}
        elif repeated and isinstance(value, list):
            value = [_convert_one(field, v) for v in value]
        else:
            value = _convert_one(field, value)
        out[key] = value
    return out


def _mask_paths(value: Any) -> Any:
    """A FieldMask's paths in lowerCamelCase, so ``display_name`` is taken as ``displayName``
    (the proto3 JSON form of a mask is camelCase only; both spellings are accepted in)."""
    if not isinstance(value, str):
        return value
    return ",".join(
        re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), path.strip())
        for path in value.split(",")
    )


def _convert_one(field: FieldDescriptor, value: Any) -> Any:
    if field.enum_type is not None:
        return _enum_value(field.enum_type, value)
    if field.message_type is not None and field.message_type.full_name == _FIELD_MASK:
        return _mask_paths(value)
    if field.message_type is not None:
        return expand_enums(field.message_type, value)
    return value


def to_message(descriptor: Descriptor, cls: type[Message], data: Any, where: str) -> Message:
    """``data`` parsed into a new ``cls``; unknown fields and wrong types are refused."""
    if not isinstance(data, dict):
        raise bad_request(
            f"{where} must be a JSON object, not {type(data).__name__}", reason="MALFORMED_JSON"
        )
    message = cls()
    try:
        json_format.ParseDict(expand_enums(descriptor, data), message)
    except json_format.ParseError as exc:
        raise _parse_refusal(str(exc)) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise bad_request(
            f"a value does not fit its field: {type(exc).__name__}", reason="INVALID_JSON_VALUE"
        ) from None
    return message


def _parse_refusal(text: str) -> errors.InvalidArgument:
    first = text.splitlines()[0].strip()
    unknown = re.search(r'has no field named "([^"]+)"', first)
    if unknown:
        name = unknown.group(1)
        return bad_request(f"unknown field {name!r}", name, reason="UNKNOWN_FIELD")
    field = re.search(r"Failed to parse (\w+) field", first)
    return bad_request(
        f"a value does not fit its field: {first}",
        field.group(1) if field else "",
        reason="INVALID_JSON_VALUE",
    )


def set_path(message: Message, path: Iterable[str], value: str) -> None:
    """Sets a (nested) string field from a path variable."""
    *parents, last = list(path)
    for part in parents:
        message = getattr(message, part)
    setattr(message, last, value)


def query_to_dict(
    descriptor: Descriptor, items: Iterable[tuple[str, str]], excluded: Iterable[tuple[str, ...]]
) -> dict[str, Any]:
    """Query parameters as a JSON object for ``descriptor`` (``a.b=1`` → ``{"a": {"b": 1}}``).

    A repeated field takes the parameter repeated (``eventTypes=A&eventTypes=B``); a singular
    one given twice, an unknown one, or one in (or under) ``excluded`` — bound by the path,
    or the body's — is refused.
    """
    banned = {tuple(p) for p in excluded}
    out: dict[str, Any] = {}
    for key, value in items:
        node, current = out, descriptor
        names: list[str] = []
        parts = key.split(".")
        for index, part in enumerate(parts):
            field = _fields(current).get(part) if current is not None else None
            if field is None:
                raise bad_request(f"unknown query parameter {key!r}", key, reason="UNKNOWN_FIELD")
            names.append(field.name)
            if index < len(parts) - 1:
                if field.message_type is None or field.message_type.full_name in _OPAQUE:
                    raise bad_request(
                        f"unknown query parameter {key!r}", key, reason="UNKNOWN_FIELD"
                    )
                node = node.setdefault(field.json_name, {})
                current = field.message_type
                continue
            if any(tuple(names[: len(b)]) == b for b in banned):
                raise bad_request(
                    f"{key} is given by the path or the body; it cannot be a query parameter",
                    key,
                    reason="UNKNOWN_FIELD",
                )
            converted = _query_value(field, value, key)
            if field.is_repeated:
                node.setdefault(field.json_name, []).append(converted)
            elif field.json_name in node:
                raise bad_request(f"query parameter {key!r} given twice", key, reason="DUPLICATE")
            else:
                node[field.json_name] = converted
    return out


def _query_value(field: FieldDescriptor, value: str, key: str) -> Any:
    if field.type == FieldDescriptor.TYPE_BOOL:
        if value in ("true", "false"):
            return value == "true"
        raise bad_request(f"{key} must be true or false", key, reason="INVALID_JSON_VALUE")
    if field.message_type is not None and field.message_type.full_name not in _OPAQUE:
        raise bad_request(f"{key} is a message: send it in the body", key, reason="UNKNOWN_FIELD")
    return value


def to_json(message: Message) -> dict[str, Any]:
    """The proto3 JSON object of ``message``: lowerCamelCase, and fields without presence
    printed even when empty (``"plugins": []``), so clients need no defaults of their own."""
    result: dict[str, Any] = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True
    )
    return result


def status_json(status: status_pb2.Status) -> dict[str, Any]:
    """A ``google.rpc.Status`` as JSON: ``code``, ``message``, ``details`` (``@type`` Any)."""
    body: dict[str, Any] = json_format.MessageToDict(status)
    body.setdefault("code", status.code)
    body.setdefault("message", status.message)
    body.setdefault("details", [])
    return body
