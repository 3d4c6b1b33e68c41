"""The webhook plugin: request shape, Standard Webhooks signatures, CloudEvents, how HTTP
outcomes become retries, and a real delivery through the servers to a local HTTP receiver
that is down (503) for a while."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from listener_common import DeliveryError, params
from listener_common.errors import ParamValidationError
from tests.plugins.support import (
    FAST_RETRY,
    create_instance,
    install,
    load_module,
    make_event,
    publish,
    run_events,
    typed,
    wait_blocked,
    wait_caught_up,
)
from tests.support.databases import sqlite_url
from tests.support.samples import event_type
from tests.support.servers import running_pair

# The Standard Webhooks reference vector (github.com/standard-webhooks, its test suite).
REF_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REF_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.fixture(scope="module")
def webhook() -> ModuleType:
    return load_module("webhook")


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: float = 300) -> bool:
    """What a receiver does: recompute the signature, compare in constant time, check age."""
    key = (
        base64.b64decode(secret.removeprefix("whsec_"))
        if secret.startswith("whsec_")
        else secret.encode()
    )
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    signed = f"{msg_id}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.partition(",")[2] for s in headers["webhook-signature"].split() if s[:3] == "v1,"]
    fresh = abs(time.time() - int(stamp)) <= tolerance
    return fresh and any(hmac.compare_digest(expected, s) for s in offered)


# -- the plugin alone, on httpx's MockTransport -------------------------------------------


@dataclass
class Recorder:
    """A MockTransport handler that records requests and answers as told."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    text: str = "ok"
    error: Exception | None = None
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return httpx.Response(self.status, headers=self.headers, text=self.text)


async def opened(webhook: ModuleType, recorder: Recorder, **values: Any) -> Any:
    plugin = webhook.WebhookListener()
    plugin.transport = httpx.MockTransport(recorder)
    config = {"url": "https://hooks.example.test:8443/in/abc?token=s3cr3t", **values}
    await plugin.open(typed(webhook.WebhookListener, config))
    return plugin


def test_form_declares_secret_as_password(webhook: ModuleType) -> None:
    form = {f["field"]: f for f in params.form_json(webhook.WebhookListener)}
    assert form["secret"]["type"] == "password"
    # The URL and the headers carry credentials too (a hook token, an Authorization header).
    assert params.secret_fields(form.values()) == {"secret", "url", "headers"}
    assert form["headers"]["type"] == "textarea" and form["format"]["type"] == "select"
    assert form["url"]["validate"]["required"] is True
    with pytest.raises(ParamValidationError) as err:
        params.validate_params(list(form.values()), {"url": "x", "format": "xml", "timeout": "0"})
    assert {f for f, _ in err.value.violations} == {"format", "timeout"}


def test_signature_matches_the_standard_webhooks_vector(webhook: ModuleType) -> None:
    key = webhook.signing_key(REF_SECRET)
    body = b'{"test": 2432232314}'
    assert webhook.sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == REF_SIGNATURE
    assert webhook.signing_key("plain secret") == b"plain secret"
    with pytest.raises(ValueError, match="not base64"):
        webhook.signing_key("whsec_***")


async def test_posts_event_json_signed(webhook: ModuleType) -> None:
    recorder = Recorder()
    plugin = await opened(
        webhook, recorder, secret=REF_SECRET, headers="X-Team: data\n\n# note\nX-Env:  prod "
    )
    event = make_event(1)
    before = int(time.time())
    await plugin.on_event(event)
    await plugin.close()
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == "https://hooks.example.test:8443/in/abc?token=s3cr3t"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == event.to_dict()
    assert b": " not in request.content  # compact: the signed bytes are exactly what is sent
    assert request.headers["webhook-id"] == "ev-1"
    assert before <= int(request.headers["webhook-timestamp"]) <= int(time.time())
    assert verify(REF_SECRET, dict(request.headers), request.content)
    assert not verify(
        "whsec_" + base64.b64encode(b"other").decode(), dict(request.headers), request.content
    )
    assert request.headers["x-team"] == "data" and request.headers["x-env"] == "prod"
    assert request.headers["user-agent"].startswith("dolphinscheduler-listener-webhook/")


async def test_plain_text_secret_and_no_secret(webhook: ModuleType) -> None:
    recorder = Recorder()
    plugin = await opened(webhook, recorder, secret="correct horse")
    await plugin.on_event(make_event(1))
    unsigned = await opened(webhook, recorder)
    await unsigned.on_event(make_event(2))
    signed_request, unsigned_request = recorder.requests
    assert verify("correct horse", dict(signed_request.headers), signed_request.content)
    assert "webhook-signature" not in unsigned_request.headers
    assert unsigned_request.headers["webhook-id"] == "ev-2"  # the id still lets receivers dedupe


async def test_cloudevents_structured_message(webhook: ModuleType) -> None:
    recorder = Recorder()
    plugin = await opened(webhook, recorder, format="cloudevents", source="urn:ds:prod")
    event = make_event(7, "WORKFLOW_FAIL", workflow_instance_id="9007")
    await plugin.on_event(event)
    (request,) = recorder.requests
    assert request.headers["content-type"].startswith("application/cloudevents+json")
    envelope = json.loads(request.content)
    assert envelope == {
        "specversion": "1.0",
        "id": "ev-7",
        "source": "urn:ds:prod",
        "type": "org.apache.dolphinscheduler.listener.workflow_fail",
        "datacontenttype": "application/json",
        "sequence": "7",
        "time": "2024-01-02T03:04:05.123Z",
        "data": event.to_dict(),
    }
    assert envelope["data"]["workflow_instance_id"] == 9007


@pytest.mark.parametrize(
    ("status", "retry_header", "retry_after", "permanent"),
    [
        (503, "7", 7.0, False),
        (500, None, None, False),
        (429, "0", 0.0, False),
        (408, "soon", None, False),  # an unparsable Retry-After is ignored, not fatal
        (400, None, None, True),
        (404, "30", None, True),  # Retry-After means nothing on a permanent failure
        (410, None, None, True),
    ],
)
async def test_status_codes_map_to_retries(
    webhook: ModuleType,
    status: int,
    retry_header: str | None,
    retry_after: float | None,
    permanent: bool,
) -> None:
    headers = {"Retry-After": retry_header} if retry_header else {}
    recorder = Recorder(status=status, headers=headers, text="  upstream\n  unavailable ")
    plugin = await opened(webhook, recorder)
    with pytest.raises(DeliveryError) as err:
        await plugin.on_event(make_event(1))
    assert err.value.retry_after == retry_after and err.value.permanent is permanent
    message = str(err.value)
    assert f"hooks.example.test:8443 answered {status}" in message
    assert "upstream unavailable" in message  # the body excerpt, whitespace folded
    assert "s3cr3t" not in message and "/in/abc" not in message  # no path or query in errors


async def test_retry_after_as_http_date(webhook: ModuleType) -> None:
    later = datetime.now(UTC) + timedelta(seconds=90)
    recorder = Recorder(status=429, headers={"Retry-After": format_datetime(later, usegmt=True)})
    plugin = await opened(webhook, recorder)
    with pytest.raises(DeliveryError) as err:
        await plugin.on_event(make_event(1))
    assert err.value.retry_after is not None and 85 <= err.value.retry_after <= 90
    assert webhook.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # past: now


async def test_long_bodies_are_cut_and_redirects_are_permanent(webhook: ModuleType) -> None:
    recorder = Recorder(status=502, text="x" * 5000)
    plugin = await opened(webhook, recorder)
    with pytest.raises(DeliveryError) as err:
        await plugin.on_event(make_event(1))
    assert "x" * 200 + "…" in str(err.value) and "x" * 201 not in str(err.value)
    recorder.status, recorder.headers = 301, {"Location": "https://new.example.test/in?k=v"}
    with pytest.raises(DeliveryError) as err:
        await plugin.on_event(make_event(1))
    assert err.value.permanent and "https://new.example.test/in" in str(err.value)
    assert "k=v" not in str(err.value)


def refused() -> httpx.ConnectError:
    """What httpx raises when nothing listens: the useful part is the cause underneath."""
    error = httpx.ConnectError("All connection attempts failed")
    error.__cause__ = ConnectionRefusedError(111, "Connection refused")
    return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ReadTimeout("read timed out"), "POST to hooks.example.test:8443 timed out after 2s"),
        (
            refused(),
            "cannot connect to hooks.example.test:8443: ConnectionRefusedError: [Errno 111] "
            "Connection refused",
        ),
        (httpx.RemoteProtocolError("peer closed"), "RemoteProtocolError: peer closed"),
    ],
)
async def test_transport_errors_are_retryable_delivery_errors(
    webhook: ModuleType, error: Exception, expected: str
) -> None:
    plugin = await opened(webhook, Recorder(error=error), timeout=2)
    with pytest.raises(DeliveryError) as err:
        await plugin.on_event(make_event(1))
    assert expected in str(err.value)
    assert not err.value.permanent and err.value.retry_after is None
    # Not a TimeoutError: the alert server would report a plugin timeout as its own.
    assert not isinstance(err.value, TimeoutError)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"url": "ftp://files.example.test/x"}, "http:// or https://"),
        ({"headers": "X-Ok: 1\nnot a header"}, "headers line 2"),
        ({"headers": "webhook-id: forged"}, "set by the plugin itself"),
        ({"secret": "whsec_%%%"}, "not base64"),
    ],
)
async def test_bad_config_fails_open_clearly(
    webhook: ModuleType, values: dict[str, str], problem: str
) -> None:
    plugin = webhook.WebhookListener()
    config = typed(webhook.WebhookListener, {"url": "https://h.example.test/", **values})
    with pytest.raises(ValueError, match=problem):
        await plugin.open(config)


async def test_one_client_per_instance_closed_on_close(webhook: ModuleType) -> None:
    recorder = Recorder()
    plugin = await opened(webhook, recorder)
    client = plugin._client
    await plugin.on_event(make_event(1))
    await plugin.on_event(make_event(2))
    assert plugin._client is client and not client.is_closed
    await plugin.close()
    assert client.is_closed and plugin._client is None
    with pytest.raises(RuntimeError, match="not open"):
        await plugin.on_event(make_event(3))


# -- through the servers, to a real HTTP receiver -----------------------------------------


@dataclass
class Received:
    target: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    """A small HTTP/1.1 server with keep-alive that answers ``status`` to every request."""

    status: int = 200
    retry_after: str | None = None
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def accepted(self) -> list[Received]:
        return [r for r in self.requests if r.status == 200]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while line := await reader.readline():
                _, target, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (raw := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = raw.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = self.status
                self.requests.append(Received(target, headers, body, status))
                reply = b"accepted" if status == 200 else b"<html>down for maintenance</html>"
                extra = f"Retry-After: {self.retry_after}\r\n" if self.retry_after else ""
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Service Unavailable'}\r\n"
                    f"Content-Length: {len(reply)}\r\n{extra}\r\n".encode()
                    + reply
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


async def test_delivers_signed_events_through_an_outage(tmp_path: Path, receiver: Receiver) -> None:
    secret = "whsec_" + base64.b64encode(uuid.uuid4().bytes).decode()
    async with running_pair(sqlite_url(tmp_path), tmp_path, **FAST_RETRY) as pair:
        c = pair.clients
        plugin = await install(c, "webhook", tmp_path)
        assert plugin.name == "plugins/webhook" and plugin.version == "1.2.0"
        url = f"http://127.0.0.1:{receiver.port}/hooks/ds?token=t0ps3cret"
        await create_instance(
            c,
            "hook",
            "webhook",
            {"url": url, "secret": secret, "headers": "X-Team: data", "timeout": "5"},
        )
        await create_instance(
            c,
            "ce",
            "webhook",
            {"url": url, "format": "cloudevents", "source": "urn:test"},
            types=[event_type("TASK_FAIL")],
        )
        receiver.status, receiver.retry_after = 503, "1"
        ids = await publish(c, run_events(1, 6))

        got = await wait_blocked(c, "hook", "503", f"127.0.0.1:{receiver.port}", "maintenance")
        assert "t0ps3cret" not in got.delivery.last_error  # the URL's query stays out of errors
        assert got.params["secret"] != secret  # masked by the API
        assert receiver.accepted() == []

        receiver.status = 200
        await wait_caught_up(c, "hook")
        await wait_caught_up(c, "ce")

    plain = [r for r in receiver.accepted() if r.headers["content-type"] == "application/json"]
    assert [json.loads(r.body)["id"] for r in plain] == ids  # all of them, in order, once
    assert [r.headers["webhook-id"] for r in plain] == ids
    assert all(verify(secret, r.headers, r.body) for r in plain)
    assert all(
        r.headers["x-team"] == "data" and r.target == "/hooks/ds?token=t0ps3cret" for r in plain
    )
    # The refused attempts at the first event carried its id too: receivers can dedupe.
    refused = [r for r in receiver.requests if r.status == 503]
    assert refused and {r.headers["webhook-id"] for r in refused} <= set(ids)
    # Keep-alive: far fewer connections than requests.
    assert receiver.connections < len(receiver.requests) / 2

    cloud = [json.loads(r.body) for r in receiver.accepted() if r not in plain]
    task_fails = [i for n, i in zip(range(1, 7), ids, strict=True) if n % 5 == 1]
    assert [e["id"] for e in cloud] == task_fails
    assert all(e["type"] == "org.apache.dolphinscheduler.listener.task_fail" for e in cloud)
    assert all(e["source"] == "urn:test" and e["data"]["id"] == e["id"] for e in cloud)
