"""HTTP/JSON on the API server: routes from the annotations, JSON in and out, errors."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api_server.http import gateway as http_gateway
from api_server.http import routes as routing
from listener.v1 import event_service_pb2, plugin_pb2
from listener_core.pipeline import Pipeline
from tests.http.support import Http, http_pair
from tests.support.samples import logger_package
from tests.support.servers import REPO, free_port

DESIGN_PATHS = {
    "PublishEvent": ("POST", "/v1/events:publish"),
    "PublishEvents": ("POST", "/v1/events:batchPublish"),
    "ListEvents": ("GET", "/v1/events"),
    "ListPlugins": ("GET", "/v1/plugins"),
    "CreatePlugin": ("POST", "/v1/plugins"),
    "GetPlugin": ("GET", "/v1/plugins/{pluginId}"),
    "UpdatePlugin": ("PATCH", "/v1/plugins/{pluginId}"),
    "DeletePlugin": ("DELETE", "/v1/plugins/{pluginId}"),
    "UploadPluginPackage": ("POST", "/v1/pluginPackages"),
    "ListListenerInstances": ("GET", "/v1/listenerInstances"),
    "CreateListenerInstance": ("POST", "/v1/listenerInstances"),
    "GetListenerInstance": ("GET", "/v1/listenerInstances/{listenerInstanceId}"),
    "UpdateListenerInstance": ("PATCH", "/v1/listenerInstances/{listenerInstanceId}"),
    "DeleteListenerInstance": ("DELETE", "/v1/listenerInstances/{listenerInstanceId}"),
    "PauseListenerInstance": ("POST", "/v1/listenerInstances/{listenerInstanceId}:pause"),
    "ResumeListenerInstance": ("POST", "/v1/listenerInstances/{listenerInstanceId}:resume"),
    "RetryListenerInstance": ("POST", "/v1/listenerInstances/{listenerInstanceId}:retry"),
    "SkipListenerInstanceEvent": ("POST", "/v1/listenerInstances/{listenerInstanceId}:skip"),
    "ReplayListenerInstance": ("POST", "/v1/listenerInstances/{listenerInstanceId}:replay"),
    "SendTestEvent": ("POST", "/v1/listenerInstances/{listenerInstanceId}:sendTestEvent"),
    "RedeliverParkedEvents": (
        "POST",
        "/v1/listenerInstances/{listenerInstanceId}:redeliverParkedEvents",
    ),
    "ListParkedEvents": ("GET", "/v1/listenerInstances/{listenerInstanceId}/parkedEvents"),
    "GetCaller": ("GET", "/v1/caller"),
}


def test_every_public_rpc_has_the_designed_route() -> None:
    found = {r.method.name: (r.http_method, r.template.openapi_path()[0]) for r in routing.routes()}
    assert found == DESIGN_PATHS


def test_templates_bind_resource_names() -> None:
    template = routing.Template.parse("/v1/{name=listenerInstances/*}:pause")
    assert template.match("/v1/listenerInstances/li-1:pause") == {
        ("name",): "listenerInstances/li-1"
    }
    assert template.match("/v1/listenerInstances/li-1") is None
    assert template.match("/v1/listenerInstances/li-1:resume") is None
    plain = routing.Template.parse("/v1/{plugin.name=plugins/*}")
    assert plain.match("/v1/plugins/a%2Db") == {("plugin", "name"): "plugins/a-b"}
    assert plain.match("/v1/plugins/x:pause") is None
    assert plain.match("/v1/plugins/a/b") is None


async def test_upload_then_create_get_list_delete(tmp_path: Path) -> None:
    package = logger_package()
    async with http_pair(tmp_path) as (_, http):
        up = await http.call(
            "POST", "/v1/pluginPackages", raw=package, content_type="application/zip"
        )
        assert up.status == 200, up.body
        assert up.json == {"sha256": hashlib.sha256(package).hexdigest(), "size": str(len(package))}
        made = await http.call(
            "POST", "/v1/plugins", {"pluginId": "log-a", "packageSha256": up.json["sha256"]}
        )
        assert made.status == 200, made.body
        assert made.json["name"] == "plugins/log-a"
        assert made.json["state"] == "STATE_ACTIVE"
        inline = await http.call(
            "POST",
            "/v1/plugins",
            {"plugin_id": "log-b", "package": base64.b64encode(package).decode()},
        )
        assert inline.status == 200, inline.body
        got = await http.call("GET", "/v1/plugins/log-a")
        assert got.status == 200 and got.json["sha256"] == up.json["sha256"]
        listed = await http.call("GET", "/v1/plugins?pageSize=1")
        assert [p["name"] for p in listed.json["plugins"]] == ["plugins/log-a"]
        nxt = await http.call("GET", f"/v1/plugins?pageToken={listed.json['nextPageToken']}")
        assert [p["name"] for p in nxt.json["plugins"]] == ["plugins/log-b"]
        gone = await http.call("DELETE", "/v1/plugins/log-b")
        assert gone.status == 200 and gone.json == {}
        missing = await http.call("GET", "/v1/plugins/log-b")
        assert missing.status == 404
        assert missing.json["code"] == 5 and missing.reason == "PLUGIN_NOT_FOUND"


async def test_bad_bodies_are_precise_4xx_and_store_nothing(tmp_path: Path) -> None:
    async with http_pair(tmp_path) as (_, http):
        cases = [
            (
                await http.call(
                    "POST", "/v1/plugins", raw=b"{not json", content_type="application/json"
                ),
                400,
                "MALFORMED_JSON",
            ),
            (
                await http.call("POST", "/v1/plugins", {"pluginId": "x", "bogus": 1}),
                400,
                "UNKNOWN_FIELD",
            ),
            (await http.call("POST", "/v1/plugins", [1, 2]), 400, "MALFORMED_JSON"),
            (
                await http.call("POST", "/v1/plugins", raw=b"{}", content_type="text/plain"),
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            ),
            (
                await http.call(
                    "POST", "/v1/pluginPackages", raw=b"PK", content_type="application/json"
                ),
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            ),
            (await http.call("GET", "/v1/plugins?bogus=1"), 400, "UNKNOWN_FIELD"),
            (await http.call("GET", "/v1/nothing"), 404, "NO_ROUTE"),
        ]
        for reply, status, reason in cases:
            assert (reply.status, reply.reason) == (status, reason), reply.body
        listed = await http.call("GET", "/v1/plugins")
        assert listed.json == {"plugins": [], "nextPageToken": ""}


async def test_security_headers_openapi_and_no_path_escape(tmp_path: Path) -> None:
    async with http_pair(tmp_path) as (_, http):
        for path in ("/v1/plugins", "/v1/nothing", "/openapi.json", "/../pyproject.toml", "/"):
            reply = await http.call("GET", path)
            assert reply.headers["X-Frame-Options"] == "DENY", path
            assert reply.headers["X-Content-Type-Options"] == "nosniff"
            assert reply.headers["Referrer-Policy"] == "no-referrer"
            csp = reply.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert reply.headers["Server"] == "listener"
            if path.startswith("/v1/"):
                assert reply.headers["Cache-Control"] == "no-store"
        spec = await http.call("GET", "/openapi.json")
        assert spec.status == 200 and spec.json["openapi"] == "3.1.0"
        assert "/v1/listenerInstances/{listenerInstanceId}:pause" in spec.json["paths"]
        for escape in ("/%2e%2e/pyproject.toml", "/..%2f..%2fpyproject.toml", "/.hidden"):
            assert (await http.call("GET", escape)).status == 404, escape


async def test_console_files_are_served_with_their_types(tmp_path: Path) -> None:
    """``/`` is index.html; other files by path, typed; dotfiles and escapes are not."""
    static = tmp_path / "static"
    (static / "js").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html><title>console</title>")
    (static / "js" / "app.js").write_text("export const x = 1;\n")
    (static / ".secret").write_text("no")
    (tmp_path / "outside.txt").write_text("no")
    gateway = http_gateway.Gateway(
        Pipeline([]),
        {},
        max_body_bytes=1024,
        max_package_bytes=1024,
        static_dir=static,
        api_routes=[],
    )
    endpoint = await http_gateway.serve(gateway, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            http = Http(f"http://127.0.0.1:{endpoint.port}", session)
            index = await http.call("GET", "/")
            assert index.status == 200 and b"<title>console</title>" in index.body
            assert index.headers["Content-Type"].startswith("text/html")
            assert "default-src 'self'" in index.headers["Content-Security-Policy"]
            script = await http.call("GET", "/js/app.js")
            assert script.status == 200 and "javascript" in script.headers["Content-Type"]
            for path in ("/.secret", "/../outside.txt", "/%2e%2e/outside.txt", "/js", "/nope.js"):
                assert (await http.call("GET", path)).status == 404, path
            assert (await http.call("POST", "/index.html")).status == 405
    finally:
        await endpoint.close()


async def test_both_doors_share_each_methods_built_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP calls the very handlers gRPC calls, so the pipeline wraps each method once for
    both: alternating doors never rebuilds it (which would cost every gRPC call)."""
    built: Counter[str] = Counter()
    wrap = Pipeline._wrap

    def counting(self: Pipeline, method: str, handler: Any, stages: Any) -> Any:
        built[method] += 1
        return wrap(self, method, handler, stages)

    monkeypatch.setattr(Pipeline, "_wrap", counting)
    async with http_pair(tmp_path) as (pair, http):
        for _ in range(3):
            await pair.clients.events.ListEvents(event_service_pb2.ListEventsRequest())
            assert (await http.call("GET", "/v1/events")).status == 200
            await pair.clients.plugins.ListPlugins(plugin_pb2.ListPluginsRequest())
            assert (await http.call("GET", "/v1/plugins")).status == 200
    assert built == {
        "/listener.v1.EventService/ListEvents": 1,
        "/listener.v1.PluginService/ListPlugins": 1,
    }


def test_a_taken_http_port_is_a_clear_exit(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "LISTENER_DATA_DIR": str(tmp_path),
            "LISTENER_API_ADDR": f"127.0.0.1:{free_port()}",
            "LISTENER_ALERT_TARGETS": f"127.0.0.1:{free_port()}",
            "LISTENER_HTTP_ADDR": f"127.0.0.1:{port}",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "api_server"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1, proc.stderr
    assert f"api_server: cannot listen on 127.0.0.1:{port} for HTTP/JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
