"""The framed protocol between the alert server and a process-isolated plugin's child.

Each frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON (one
object). The host writes requests to the child's stdin and reads replies from its stdout;
the child answers each request, in order, before reading the next::

    host  → {"id": 1, "op": "hello", "protocol": 1}
    child ← {"id": 1, "ok": true, "protocol": 1, "pid": 4242}
    host  → {"id": 2, "op": "load", "plugin_id": "…", "sha256": "…", "zip_path": "…"}
    child ← {"id": 2, "ok": true, "form": […], "batch": false}
    host  → {"id": 3, "op": "open", "config": {…}}        then "event" / "events" / "close"
    child ← {"id": 3, "ok": false, "error": {"type": "ValueError", "message": "…",
                                               "retry_after": null, "permanent": false}}

Events cross as ``ListenerEvent.to_dict()`` and are rebuilt with ``events.from_dict``; errors
as type name and message plus ``DeliveryError``'s ``retry_after``/``permanent``, never
pickles (a child's bytes are not trusted to run code in the host). JSON keeps the protocol
readable in a debugger and independent of the Python version on either side; a version
mismatch fails the handshake with a message, not with garbage.

This module is imported by the child too, so it depends on the SDK only.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

from alert_server.errors import ProtocolError, RemoteError
from listener_common.errors import DeliveryError

PROTOCOL_VERSION = 1
#: Largest frame either side accepts: a batch of events is far smaller.
MAX_FRAME = 256 * 2**20
_HEADER = struct.Struct(">I")


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), default=str).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


def _decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


def _length(header: bytes) -> int:
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    return int(size)


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None at a clean end of stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("stream ended inside a frame header") from None
        return None
    try:
        body = await reader.readexactly(_length(header))
    except asyncio.IncompleteReadError:
        raise ProtocolError("stream ended inside a frame") from None
    return _decode(body)


def decode_all(data: bytes) -> list[dict[str, Any]]:
    """Every frame in ``data`` (what a one-shot child wrote before it exited)."""
    messages: list[dict[str, Any]] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            raise ProtocolError("output ends inside a frame header")
        size = _length(data[offset : offset + _HEADER.size])
        offset += _HEADER.size
        if len(data) - offset < size:
            raise ProtocolError("output ends inside a frame")
        messages.append(_decode(data[offset : offset + size]))
        offset += size
    return messages


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    retry_after = getattr(exc, "retry_after", None) if isinstance(exc, DeliveryError) else None
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "retry_after": retry_after,
        "permanent": bool(getattr(exc, "permanent", False)),
    }


_REMOTE_TYPES: dict[str, type[RemoteError]] = {}


def error_from_wire(data: dict[str, Any]) -> Exception:
    name = str(data.get("type") or "Exception")
    message = str(data.get("message") or "")
    if name == "DeliveryError":
        retry_after = data.get("retry_after")
        return DeliveryError(
            message,
            retry_after=float(retry_after) if retry_after is not None else None,
            permanent=bool(data.get("permanent")),
        )
    if not name.isidentifier():
        name = "RemoteError"
    cls = _REMOTE_TYPES.get(name)
    if cls is None:
        cls = type(name, (RemoteError,), {"__module__": "plugin_process"})
        if len(_REMOTE_TYPES) < 256:  # a bounded cache: names come from plugin code
            _REMOTE_TYPES[name] = cls
    return cls(message)
