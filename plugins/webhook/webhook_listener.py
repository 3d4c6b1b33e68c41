"""The webhook listener: POSTs each event to an HTTP(S) endpoint, signed per Standard Webhooks.

The body is the event's ``to_dict()`` as JSON, or a CloudEvents 1.0 structured message. Every
request carries ``webhook-id`` (the event id, stable across redeliveries, so receivers can
de-duplicate), ``webhook-timestamp`` and, with a secret, ``webhook-signature`` =
``v1,`` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")). When the servers trace, the
event's ``traceparent`` goes along as the W3C header of that name, so the receiver continues
the publisher's trace.

Outcomes map onto the delivery loop's retry policy: 2xx delivered; 408, 429, 5xx, timeouts and
connection errors are transient (``DeliveryError`` with ``retry_after`` from ``Retry-After``);
any other status is permanent, since sending the same request again cannot help.

There is no ``on_events``: a webhook takes one event per request, and per-event delivery lets
the instance's cursor move after each accepted request instead of redelivering a whole batch.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from listener_common import DeliveryError, ListenerPlugin, cloudevents, events, params

USER_AGENT = "dolphinscheduler-listener-webhook/1.0"
CLOUDEVENTS_TYPE_PREFIX = cloudevents.TYPE_PREFIX
#: Headers the plugin sets itself; an extra header of the same name is refused, not merged.
_OWN_HEADERS = frozenset({"content-type", "webhook-id", "webhook-timestamp", "webhook-signature"})
_EXCERPT = 200


def signing_key(secret: str) -> bytes:
    """The HMAC key: ``whsec_<base64>`` is decoded (Standard Webhooks), anything else is UTF-8."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("secret starts with whsec_ but the rest is not base64") from exc
    return secret.encode("utf-8")


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one request."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def parse_headers(text: str) -> dict[str, str]:
    """``Name: value`` per line; blank lines and ``#`` comments are skipped."""
    headers: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not name or any(c in name for c in ' \t()<>@,;\\"/[]?={}'):
            raise ValueError(f"headers line {number}: expected 'Name: value', got {line!r}")
        if name.lower() in _OWN_HEADERS:
            raise ValueError(f"headers line {number}: {name} is set by the plugin itself")
        headers[name] = value.strip()
    return headers


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


def cloud_event(event: events.ListenerEvent, source: str) -> dict[str, Any]:
    """A CloudEvents 1.0 structured-mode envelope with the event dict as ``data``."""
    return cloudevents.structured(event, source)


def _root_cause(exc: BaseException) -> str:
    """The innermost error: "Connection refused" says more than "All connection attempts
    failed", which is what httpx reports on top of it."""
    seen = exc
    for _ in range(10):
        inner = seen.__cause__ or seen.__context__
        if inner is None:
            break
        seen = inner
    text = str(seen)
    return f"{type(seen).__name__}: {text}" if text else type(seen).__name__


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT else flat[:_EXCERPT] + "…"


class WebhookListener(ListenerPlugin):
    """One POST per event, on one pooled ``httpx.AsyncClient`` per listener instance."""

    @classmethod
    def params(cls) -> list[params.PluginParam]:
        return [
            params.Input(
                "url",
                title="URL",
                required=True,
                info="http:// or https:// endpoint that receives one POST per event. Secret: "
                "a hook URL often is the credential (Slack-style), so it is stored encrypted "
                "and never shown.",
                secret=True,
            ),
            params.Password(
                "secret",
                title="Signing secret",
                info="Signs requests (webhook-signature). whsec_<base64> as Standard Webhooks "
                "issues them, or any text; empty sends no signature.",
            ),
            params.Select(
                "format",
                title="Body format",
                value="json",
                options=[("Event JSON", "json"), ("CloudEvents 1.0 (structured)", "cloudevents")],
            ),
            params.Input(
                "source",
                title="CloudEvents source",
                value="/dolphinscheduler/listener",
                info="The CloudEvents 'source' attribute (a URI reference).",
            ),
            params.Textarea(
                "headers",
                title="Extra headers",
                value="",
                info="One 'Name: value' per line, e.g. 'Authorization: Bearer …'. Secret: "
                "stored encrypted and never shown.",
                secret=True,
            ),
            params.InputNumber(
                "timeout",
                title="Timeout (s)",
                value=10,
                min=0.1,
                max=120,
                info="Per request; keep it below the alert server's handler_timeout.",
            ),
            params.Switch(
                "verifyTls",
                title="Verify TLS certificates",
                value=True,
                info="Turn off only for a test endpoint with a self-signed certificate.",
            ),
        ]

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None
        self._url = ""
        self._host = ""
        self._key: bytes | None = None
        self._cloudevents = False
        self._source = ""
        self._timeout = 10.0
        #: A transport to use instead of the network (tests inject ``httpx.MockTransport``).
        self.transport: httpx.AsyncBaseTransport | None = None

    async def open(self, config: dict[str, Any]) -> None:
        url = str(config["url"]).strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be an http:// or https:// URL, got scheme {parts.scheme!r}")
        self._url = url
        # Messages name host and port only: paths and queries often carry tokens.
        self._host = parts.netloc.rpartition("@")[2]
        secret = str(config.get("secret") or "")
        self._key = signing_key(secret) if secret else None
        self._cloudevents = config.get("format") == "cloudevents"
        self._source = str(config.get("source") or "/dolphinscheduler/listener")
        self._timeout = float(config.get("timeout") or 10)
        headers = {"User-Agent": USER_AGENT, **parse_headers(str(config.get("headers") or ""))}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=self._timeout,
            verify=bool(config.get("verifyTls", True)),
            follow_redirects=False,
            transport=self.transport,
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def request_parts(self, event: events.ListenerEvent, now: int) -> tuple[bytes, dict[str, str]]:
        """The body and the plugin's own headers for one event at unix time ``now``."""
        if self._cloudevents:
            document = cloud_event(event, self._source)
            content_type = "application/cloudevents+json; charset=utf-8"
        else:
            document = event.to_dict()
            content_type = "application/json"
        body = json.dumps(document, separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": content_type,
            "webhook-id": event.id,
            "webhook-timestamp": str(now),
        }
        if self._key is not None:
            headers["webhook-signature"] = sign(self._key, event.id, now, body)
        if event.traceparent:
            headers["traceparent"] = event.traceparent
        return body, headers

    async def on_event(self, event: events.ListenerEvent) -> None:
        if self._client is None:
            raise RuntimeError("the webhook client is not open")
        # Signed afresh on every attempt: receivers reject stale timestamps.
        body, headers = self.request_parts(event, int(time.time()))
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise DeliveryError(
                f"POST to {self._host} timed out after {self._timeout:g}s ({type(exc).__name__})"
            ) from exc
        except httpx.ConnectError as exc:
            raise DeliveryError(f"cannot connect to {self._host}: {_root_cause(exc)}") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"POST to {self._host} failed: {type(exc).__name__}: {exc}"
            ) from exc
        self._check(response)

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        excerpt = _excerpt(response.text)
        detail = f"{self._host} answered {status} {response.reason_phrase}".rstrip()
        if excerpt:
            detail += f": {excerpt}"
        if status in (408, 429) or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None:
                detail += f" (Retry-After {retry_after:g}s)"
            raise DeliveryError(detail, retry_after=retry_after)
        if 300 <= status < 400:
            location = response.headers.get("Location", "").partition("?")[0]
            raise DeliveryError(
                f"{detail}; redirected to {location!r}: set url to the final address",
                permanent=True,
            )
        raise DeliveryError(f"{detail} (not retryable without a change)", permanent=True)
