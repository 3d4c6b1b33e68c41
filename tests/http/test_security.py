"""HTTP/JSON goes through the API's own checks: tokens and roles per route, the audit line
with the real caller, the RPC metrics, the per-caller publish limit, and the gateway's own
refusals (bodies, content types, sizes, methods)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from api_server.http import gateway as http_gateway
from api_server.http import routes as routing
from api_server.limits import PublishLimiter
from listener.v1 import event_service_pb2
from listener_core import auth
from listener_core.pipeline import Pipeline
from listener_core.pipeline.error_status import ErrorStatus
from tests.http.support import Http, http_pair
from tests.security.helpers import make_certs
from tests.support.databases import sqlite_url
from tests.support.servers import running_pair

TOKENS = {"admin": "adm-h77", "publisher": "pub-h88", "viewer": "view-h99"}
TOKEN_CONFIG = tuple(f"{role}:{token}" for role, token in TOKENS.items())
REFUSED = {401, 403}


def _path(route: routing.Route) -> str:
    """A concrete path of the route, with id ``x`` in each variable."""
    path, params = route.template.openapi_path()
    for param in params:
        path = path.replace("{" + param + "}", "x")
    return path


async def _call(http: Http, route: routing.Route, token: str | None) -> Any:
    if route.raw_body:
        return await http.call(
            route.http_method, _path(route), raw=b"", content_type="application/zip", token=token
        )
    body = {} if route.http_method in ("POST", "PATCH") else None
    return await http.call(route.http_method, _path(route), body, token=token or "")


async def test_every_route_checks_token_and_role(tmp_path: Path) -> None:
    async with http_pair(tmp_path, tokens=TOKEN_CONFIG) as (_, http):
        for route in routing.routes():
            allowed = auth.PUBLIC_METHOD_ROLES[route.grpc_method]
            missing = await _call(http, route, None)
            assert missing.status == 401 and missing.reason == "TOKEN_MISSING", route.grpc_method
            assert missing.json["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
            wrong = await _call(http, route, "not-a-token")
            assert wrong.status == 401 and wrong.reason == "TOKEN_INVALID", route.grpc_method
            for role, token in TOKENS.items():
                reply = await _call(http, route, token)
                if role == "admin" or role in allowed:
                    assert reply.status not in REFUSED, (route.grpc_method, role, reply.body)
                else:
                    assert reply.status == 403, (route.grpc_method, role, reply.body)
                    assert reply.reason == "ROLE_NOT_ALLOWED"
        # A wrong scheme is no token at all.
        basic = await http.call(
            "GET", "/v1/plugins", headers={"Authorization": "Basic " + TOKENS["admin"]}
        )
        assert basic.status == 401
        # The console's files and the OpenAPI document need no token: they hold no data.
        assert (await http.call("GET", "/openapi.json")).status == 200


async def test_audit_line_and_metrics_see_the_http_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="listener.audit")
    async with http_pair(tmp_path, tokens=TOKEN_CONFIG) as (pair, http):
        admin = http.as_(TOKENS["admin"])
        reply = await admin.call("DELETE", "/v1/plugins/nope")
        assert reply.status == 404
        viewer = await http.as_(TOKENS["viewer"]).call("DELETE", "/v1/plugins/nope")
        assert viewer.status == 403
        await admin.call("POST", "/v1/plugins", {"pluginId": "x", "bogus": 1})
        assert pair.api.metrics is not None
        rpcs = pair.api.metrics.rpcs
        method = "/listener.v1.PluginService/DeletePlugin"
        assert rpcs.labels(method, "NOT_FOUND")._value.get() == 1
        assert rpcs.labels(method, "PERMISSION_DENIED")._value.get() == 1
        create = "/listener.v1.PluginService/CreatePlugin"
        assert rpcs.labels(create, "INVALID_ARGUMENT")._value.get() == 1
    audit = [r for r in caplog.records if r.name == "listener.audit"]
    digest = "token:" + hashlib.sha256(TOKENS["admin"].encode()).hexdigest()[:12]
    found = [(r.action, r.resource, r.code, r.caller) for r in audit]  # type: ignore[attr-defined]
    assert ("DeletePlugin", "plugins/nope", "NOT_FOUND", digest) in found, found
    # An unparsable request names no resource, as over gRPC.
    assert ("CreatePlugin", "", "INVALID_ARGUMENT", digest) in found, found
    viewer_digest = "token:" + hashlib.sha256(TOKENS["viewer"].encode()).hexdigest()[:12]
    # A refused call's request is never read (SECURITY.md), so its line names no resource.
    assert ("DeletePlugin", "", "PERMISSION_DENIED", viewer_digest) in found


async def test_the_publish_limit_counts_http_callers_by_their_address() -> None:
    """Two publishes in flight from one host with limit 1: the second is refused (429), as
    over gRPC; the limiter saw the client's socket address, not a header."""
    release = asyncio.Event()
    entered = asyncio.Event()

    async def publish(request: Any, context: Any) -> Any:
        entered.set()
        await release.wait()
        return event_service_pb2.PublishEventResponse(id="e", sequence=1)

    limiter = PublishLimiter(1)
    method = "/listener.v1.EventService/PublishEvent"
    handler = grpc.unary_unary_rpc_method_handler(publish)
    route = next(r for r in routing.routes() if r.grpc_method == method)
    gateway = http_gateway.Gateway(
        Pipeline([ErrorStatus(), limiter]),
        {method: handler},
        max_body_bytes=1 << 20,
        max_package_bytes=1 << 20,
        api_routes=[route],
    )
    endpoint = await http_gateway.serve(gateway, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            http = Http(f"http://127.0.0.1:{endpoint.port}", session)
            first = asyncio.create_task(http.call("POST", "/v1/events:publish", {}))
            async with asyncio.timeout(30):
                await entered.wait()
            assert limiter.in_flight("peer:ipv4:127.0.0.1") == 1
            second = await http.call("POST", "/v1/events:publish", {})
            assert second.status == 429 and second.reason == "PUBLISH_CONCURRENCY", second.body
            release.set()
            done = await first
            assert done.status == 200 and done.json == {"id": "e", "sequence": "1"}
            assert limiter.in_flight("peer:ipv4:127.0.0.1") == 0
    finally:
        await endpoint.close()


async def test_gateway_refusals_are_precise(tmp_path: Path) -> None:
    async with http_pair(tmp_path, max_message_bytes=64 * 1024) as (_, http):
        big = await http.call("POST", "/v1/events:publish", {"requestId": "x" * 70_000})
        assert big.status == 413 and big.reason == "BODY_TOO_LARGE", big.body
        assert big.json["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        cases = {
            "form": await http.call(
                "POST",
                "/v1/events:publish",
                raw=b"a=b",
                content_type="application/x-www-form-urlencoded",
            ),
            "not utf-8": await http.call(
                "POST", "/v1/events:publish", raw=b"\xff\xfe", content_type="application/json"
            ),
            "truncated": await http.call(
                "POST", "/v1/events:publish", raw=b'{"event": {', content_type="application/json"
            ),
            "wrong type": await http.call("POST", "/v1/events:publish", {"requestId": 5}),
            "bad enum": await http.call("GET", "/v1/events?eventTypes=NOT_A_TYPE"),
            "int64 text": await http.call("GET", "/v1/events?afterSequence=abc"),
            "twice": await http.call("GET", "/v1/events?pageSize=1&pageSize=2"),
            "query on body method": await http.call("POST", "/v1/events:publish?requestId=x", {}),
            "body on GET": await http.call("GET", "/v1/plugins", {"pageSize": 1}),
            "path field in query": await http.call("GET", "/v1/plugins/x?name=plugins/y"),
            "nested unknown": await http.call(
                "POST", "/v1/events:publish", {"event": {"taskFail": {"nope": 1}}}
            ),
        }
        expected = {
            "form": (415, "UNSUPPORTED_MEDIA_TYPE"),
            "not utf-8": (400, "MALFORMED_JSON"),
            "truncated": (400, "MALFORMED_JSON"),
            "wrong type": (400, "INVALID_JSON_VALUE"),
            "bad enum": (400, "INVALID_JSON_VALUE"),
            "int64 text": (400, "INVALID_JSON_VALUE"),
            "twice": (400, "DUPLICATE"),
            "query on body method": (400, "UNKNOWN_FIELD"),
            "body on GET": (400, "UNEXPECTED_BODY"),
            "path field in query": (400, "UNKNOWN_FIELD"),
            "nested unknown": (400, "UNKNOWN_FIELD"),
        }
        got = {name: (reply.status, reply.reason) for name, reply in cases.items()}
        assert got == expected, {n: cases[n].body for n in cases if got[n] != expected[n]}
        wrong_method = await http.call("PUT", "/v1/plugins")
        assert wrong_method.status == 405
        assert set(wrong_method.headers["Allow"].split(", ")) == {"GET", "POST"}
        events = await http.call("GET", "/v1/events")
        assert events.status == 200 and events.json["events"] == []
        # Plain ``curl -d '{...}'`` labels JSON as a form: a JSON object is taken as JSON.
        curl_d = await http.call(
            "POST",
            "/v1/events:publish",
            raw=b'{"event": {"taskFail": {"projectName": "etl"}}}',
            content_type="application/x-www-form-urlencoded",
        )
        assert curl_d.status == 200 and curl_d.json["sequence"] == "1", curl_d.body


async def test_https_with_the_api_certificate(tmp_path: Path) -> None:
    """With tls_cert set, HTTP is HTTPS with the same certificate; curl checks it."""
    certs = make_certs(tmp_path / "certs")
    settings = {"tls_cert": str(certs.server_cert), "tls_key": str(certs.server_key)}
    async with running_pair(sqlite_url(tmp_path), tmp_path, **settings) as pair:
        url = f"https://127.0.0.1:{pair.api.http_port}/v1/plugins"
        trusted = await _curl("--cacert", str(certs.ca), url)
        assert trusted.returncode == 0, trusted.stderr
        assert json.loads(trusted.stdout) == {"plugins": [], "nextPageToken": ""}
        untrusted = await _curl("--cacert", str(certs.other_ca), url)
        assert untrusted.returncode == 60, untrusted.stderr  # certificate problem
        plain = await _curl(url.replace("https:", "http:"))
        assert plain.returncode != 0


async def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, ["curl", "-sS", *args], capture_output=True, text=True, timeout=60
    )


async def test_other_sites_pages_cannot_call_an_open_server(tmp_path: Path) -> None:
    """No tokens (loopback only): a cross-origin changing call, and any request addressed to
    a non-loopback name (DNS rebinding), are refused; curl-style and same-origin calls pass."""
    async with http_pair(tmp_path) as (pair, http):
        own = f"http://127.0.0.1:{pair.api.http_port}"
        event = {"event": {"taskFail": {"taskName": "t"}}}
        refusals = {
            "foreign origin": await http.call(
                "POST", "/v1/events:publish", event, headers={"Origin": "http://evil.example"}
            ),
            "null origin": await http.call(
                "POST", "/v1/events:publish", event, headers={"Origin": "null"}
            ),
            "cross-site fetch": await http.call(
                "POST", "/v1/events:publish", event, headers={"Sec-Fetch-Site": "cross-site"}
            ),
            "no-type body": await http.call(
                "POST",
                "/v1/events:publish",
                raw=json.dumps(event).encode(),
                headers={"Origin": "http://evil.example"},
            ),
            "pause": await http.call(
                "POST", "/v1/listenerInstances/x:pause", headers={"Origin": "http://evil.example"}
            ),
        }
        for name, reply in refusals.items():
            assert (reply.status, reply.reason) == (403, "CROSS_ORIGIN"), (name, reply.body)
        rebound = await http.call("GET", "/v1/plugins", headers={"Host": "evil.example"})
        assert (rebound.status, rebound.reason) == (403, "HOST_NOT_ALLOWED"), rebound.body
        page = await http.call("GET", "/", headers={"Host": f"evil.example:{pair.api.http_port}"})
        assert page.status == 403
        assert (await http.call("GET", "/v1/events")).json["events"] == []  # nothing stored

        same = await http.call(
            "POST",
            "/v1/events:publish",
            event,
            headers={"Origin": own, "Sec-Fetch-Site": "same-origin"},
        )
        assert same.status == 200, same.body
        proxied = await http.call(  # the page is https behind a proxy ending TLS
            "POST",
            "/v1/events:publish",
            event,
            headers={"Origin": own.replace("http:", "https:")},
        )
        assert proxied.status == 200, proxied.body
        for host in (f"localhost:{pair.api.http_port}", f"127.0.0.1:{pair.api.http_port}"):
            assert (await http.call("GET", "/v1/plugins", headers={"Host": host})).status == 200
        foreign_read = await http.call(
            "GET", "/v1/plugins", headers={"Origin": "http://evil.example"}
        )
        assert foreign_read.status == 200  # reads are not changes; CORS keeps the answer away


async def test_with_tokens_any_host_name_reaches_the_token_check(tmp_path: Path) -> None:
    async with http_pair(tmp_path, tokens=TOKEN_CONFIG) as (_, http):
        named = await http.call("GET", "/v1/plugins", headers={"Host": "listener.example"})
        assert named.status == 401
        ok = await http.call(
            "GET", "/v1/plugins", token=TOKENS["viewer"], headers={"Host": "listener.example"}
        )
        assert ok.status == 200
