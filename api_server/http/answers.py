"""The gateway's answers that are not a method's reply: errors as JSON statuses, the refusals
of a body too large, of the wrong media type or method, and the headers every response gets."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

import grpc
from aiohttp import web
from google.rpc import status_pb2

from api_server.http import routes as routing
from api_server.http import transcode
from listener_core import errors
from listener_core.pipeline.error_status import to_status

_JSON_TYPES = ("application/json",)
_RAW_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")

#: Sent with every response: the console's pages load only their own files, and no site may
#: frame them; no response is sniffed into another type; no URL leaks through Referer.
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
        "object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def media_type(request: web.Request) -> str:
    return request.content_type.lower() if request.headers.get("Content-Type") else ""


def error_response(err: errors.ServiceError, http_status: int | None = None) -> web.Response:
    status = to_status(err)
    return status_response(status, http_status)


def status_response(status: status_pb2.Status, http_status: int | None = None) -> web.Response:
    return web.json_response(
        transcode.status_json(status), status=http_status or transcode.http_status(status.code)
    )


def loopback_name(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


async def curl_json(request: web.Request, route: routing.Route) -> bool:
    """Whether a body labelled as a form is a JSON object: ``curl -d '{...}'`` labels its body
    application/x-www-form-urlencoded, and plain curl is a client the API promises to serve.
    Other sites' pages are refused by their Origin before this (``Gateway._browser_refusal``)."""
    if route.raw_body or media_type(request) != "application/x-www-form-urlencoded":
        return False
    return (await request.read()).lstrip().startswith(b"{")


def content_type_refusal(request: web.Request, route: routing.Route) -> web.Response | None:
    media = media_type(request)
    if route.raw_body:
        if media in _RAW_TYPES:
            return None
        wanted = "application/zip"
    elif not request.can_read_body or not media or media in _JSON_TYPES or media.endswith("+json"):
        return None
    else:
        wanted = "application/json"
    return error_response(
        errors.InvalidArgument(
            f"Content-Type {media or '(none)'} is not accepted here: send {wanted}",
            reason="UNSUPPORTED_MEDIA_TYPE",
            metadata={"accepted": wanted},
        ),
        415,
    )


def too_large(limit: int) -> web.Response:
    return error_response(
        errors.ResourceExhausted(
            f"the body exceeds the limit of {limit} bytes",
            reason="BODY_TOO_LARGE",
            metadata={"limit": str(limit)},
        ),
        413,
    )


def not_allowed(allowed: Sequence[str]) -> web.Response:
    response = status_response(
        status_pb2.Status(
            code=grpc.StatusCode.UNIMPLEMENTED.value[0],
            message=f"method not allowed here; allowed: {', '.join(allowed)}",
        ),
        405,
    )
    response.headers["Allow"] = ", ".join(allowed)
    return response


async def secure(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Server"] = "listener"  # not the library and its version
    if request.path.startswith("/v1/"):
        response.headers["Cache-Control"] = "no-store"  # answers hold data a token unlocked
