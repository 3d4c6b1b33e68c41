"""The console's test rig: both servers as subprocesses with the HTTP port on, Debian's
Chromium driven by Playwright, a webhook receiver that can be switched off, and plain HTTP
calls for what the console does not do itself (publishing)."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.databases import sqlite_url
from tests.support.samples import make_zip, manifest
from tests.support.servers import REPO, ServerPair, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Set to a directory (docs/screenshots) to save a PNG of each page while the flows run.
SCREENSHOTS = os.environ.get("LISTENER_CONSOLE_SCREENSHOTS", "")


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
        )


@dataclass
class Console:
    """Both servers, and the console's base URL."""

    pair: ServerPair
    base: str

    def call(self, method: str, path: str, body: Any = None, token: str = "") -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                text = reply.read().decode()
                return reply.status, json.loads(text) if text else {}
        except urllib.error.HTTPError as err:
            text = err.read().decode()
            return err.code, json.loads(text) if text.startswith("{") else text

    def publish(self, event: dict[str, Any], token: str = "") -> dict[str, Any]:
        status, reply = self.call("POST", "/v1/events:publish", {"event": event}, token)
        assert status == 200, reply
        return reply  # type: ignore[no-any-return]


def wait_http(base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(base + "/", timeout=2):
                return
        except (OSError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def console_servers(tmp: Path, tokens: str = "") -> Iterator[Console]:
    # A failed event waits minutes for its next automatic attempt, so what moves it in the
    # tests is the operator's "Retry now", not a backoff timer racing the clicks.
    env = {"LISTENER_RETRY_BASE": "300", "LISTENER_RETRY_MAX": "600"}
    if tokens:
        env["LISTENER_TOKENS"] = tokens
    pair = ServerPair(sqlite_url(tmp), tmp / "data", extra_env=env)
    try:
        pair.start_both()
        base = f"http://{pair.http_addr}"
        wait_http(base)
        yield Console(pair, base)
    finally:
        pair.stop()


def dist_package(name: str) -> Path:
    """A shipped plugin's package as `make plugins` builds it."""
    found = sorted((REPO / "dist" / "plugins").glob(f"{name}-*.zip"))
    if not found:
        pytest.fail(f"dist/plugins/{name}-*.zip missing: run `make plugins` first")
    return found[-1]


# A plugin whose form has one field of every DolphinScheduler control type (DESIGN §6).
FORMKIT_PLUGIN = """
from listener_common import ListenerPlugin, params

class FormKit(ListenerPlugin):
    @classmethod
    def params(cls):
        return [
            params.Input("target", title="Target", required=True, info="Where events go."),
            params.InputNumber("batch", title="Batch size", value=10, min=1, max=100),
            params.Radio("mode", title="Mode", value="fast",
                         options=[("Fast", "fast"), ("Safe", "safe")]),
            params.Select("level", title="Level", value="info", options=["debug", "info", "warn"]),
            params.Switch("enabled", title="Enabled", value=True),
            params.Checkbox("tags", title="Tags", value=["a"],
                            options=[("Alpha", "a"), ("Beta", "b"), ("Gamma", "c")]),
            params.Textarea("notes", title="Notes", value=""),
            params.Password("token", title="Token"),
        ]

    async def open(self, config):
        self.config = config

    async def on_event(self, event):
        pass
"""


def formkit_package() -> bytes:
    return make_zip(
        {"formkit_listener.py": FORMKIT_PLUGIN},
        manifest("formkit", "formkit_listener:FormKit", extra='display_name = "Form kit"\n'),
    )


def broken_webhook_package() -> bytes:
    """Named webhook, version 2, but its entry class does not exist: the load fails."""
    return make_zip(
        {"webhook_listener.py": "X = 1\n"},
        manifest("webhook", "webhook_listener:WebhookListener", version="2.0.0"),
    )


@dataclass
class Receiver:
    """A webhook endpoint on a fixed port that can be stopped (connection refused) and
    started again."""

    port: int = field(default_factory=free_port)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self) -> list[str]:
        return [str(body.get("id")) for body in list(self.bodies)]

    def wait_for(self, event_id: str, after: int = 0, timeout: float = 60.0) -> None:
        """Until the event arrives (again, when ``after`` bodies came before): delivery is at
        least once, so an operator action racing a batch may repeat one, and order is not
        what is asserted here."""
        deadline = time.monotonic() + timeout
        while event_id not in self.ids()[after:]:
            if time.monotonic() > deadline:
                raise AssertionError(f"webhook never got {event_id}; got {self.ids()}")
            time.sleep(0.05)

    def wait(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"webhook got {len(self.bodies)} of {count} events")
            time.sleep(0.05)
        return self.bodies


def shot(page: Any, name: str) -> None:
    """Saves the visible page as docs/screenshots/<name>.png when asked to."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))
