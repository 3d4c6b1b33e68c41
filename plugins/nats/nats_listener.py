"""The NATS listener: publishes each event to JetStream with ``Nats-Msg-Id`` = event id.

JetStream acknowledges every stored message, and drops a message whose ``Nats-Msg-Id`` it
has seen within the stream's duplicate window (two minutes by default): a redelivered event
(delivery is at least once) is stored once. A batch is published with ``publish_async`` and
its acknowledgements awaited together; one connection keeps the batch in order.

The connection does not reconnect by itself (``allow_reconnect=False``): a lost connection
fails the attempt in flight with a clear message, and the next attempt, which the alert server
schedules with backoff, connects afresh. Publishes never sit in a client-side buffer during an
outage to be flushed later behind the delivery loop's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors

from listener_common import DeliveryError, ListenerPlugin, cloudevents, events, params, templates
from listener_common.errors import error_text

_UNSAFE = " \t\r\n.*>"
TEMPLATE_FIELDS = templates.TEMPLATE_FIELDS


def check_template(template: str) -> None:
    """Rejects unknown fields and subjects that could never be valid (empty tokens)."""
    sample = templates.check_template(template, "subject", _UNSAFE)
    if any(not token for token in sample.split(".")) or any(c in sample for c in " \t*>"):
        raise ValueError(
            f"subject template {template!r} gives {sample!r}: a subject is non-empty tokens "
            "separated by single dots, without spaces or wildcards"
        )


def render(template: str, data: Mapping[str, Any]) -> str:
    """The subject of one event (``templates.render_template``)."""
    return templates.render_template(template, data, _UNSAFE)


def _safe_server(url: str) -> str:
    """A server URL without any user or password in it, for messages."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class NatsListener(ListenerPlugin):
    """Publishes to JetStream over one connection per listener instance."""

    @classmethod
    def params(cls) -> list[params.PluginParam]:
        return [
            params.Input(
                "servers",
                title="Servers",
                required=True,
                value="nats://127.0.0.1:4222",
                info="Comma-separated nats:// (or tls://) URLs of one cluster. Secret, as "
                "credentials may be in them (nats://user:password@host).",
                secret=True,
            ),
            params.Input(
                "subject",
                title="Subject template",
                value="listener.{type}.{project_name}",
                info="Event fields in braces; {type} is lower case, e.g. task_fail. A stream "
                "must capture these subjects.",
            ),
            params.Input(
                "stream",
                title="Expected stream",
                value="",
                info="If set, checked to exist at open and required to be the stream that "
                "stores each message.",
            ),
            params.Select(
                "format",
                title="Message format",
                value="json",
                options=[
                    ("Event JSON with Nats-Msg-Id, event-type and event-sequence headers", "json"),
                    ("CloudEvents 1.0, binary mode (ce- headers)", "cloudevents"),
                ],
                info="CloudEvents binary mode keeps the body (the event JSON) and adds the "
                "CloudEvents attributes as headers (ce-id, ce-type, …), per the "
                "CloudEvents NATS protocol binding.",
            ),
            params.Input(
                "source",
                title="CloudEvents source",
                value=cloudevents.DEFAULT_SOURCE,
                info="The CloudEvents 'source' attribute (a URI reference).",
            ),
            params.Input("user", title="User", value=""),
            params.Password("password", title="Password"),
            params.Password("token", title="Token", info="Token authentication instead of a user."),
            params.InputNumber(
                "timeout",
                title="Timeout (s)",
                value=5,
                min=0.1,
                max=120,
                info="For connecting and for JetStream's acknowledgements.",
            ),
        ]

    def __init__(self) -> None:
        self._servers: list[str] = []
        self._where = ""
        self._subject = ""
        self._stream: str | None = None
        self._auth: dict[str, str] = {}
        self._timeout = 5.0
        self._cloud_source: str | None = None
        self._nc: Any = None
        self._js: Any = None

    async def open(self, config: dict[str, Any]) -> None:
        self._servers = [s.strip() for s in str(config["servers"]).split(",") if s.strip()]
        if not self._servers:
            raise ValueError("servers: give at least one nats:// URL")
        self._where = ", ".join(_safe_server(s) for s in self._servers)
        self._subject = str(config.get("subject") or "")
        check_template(self._subject)
        self._stream = str(config.get("stream") or "").strip() or None
        self._auth = {
            key: str(config[key]) for key in ("user", "password", "token") if config.get(key)
        }
        self._timeout = float(config.get("timeout") or 5)
        if config.get("format") == "cloudevents":
            self._cloud_source = str(config.get("source") or cloudevents.DEFAULT_SOURCE)
        await self._connect()

    async def close(self) -> None:
        await self._disconnect()

    async def _connect(self) -> None:
        seen: list[BaseException] = []

        async def on_error(exc: Exception) -> None:
            seen.append(exc)

        try:
            nc = await nats.connect(
                self._servers,
                name="dolphinscheduler-listener",
                allow_reconnect=False,
                max_reconnect_attempts=1,  # each server is tried twice, then connect gives up
                reconnect_time_wait=0.2,
                connect_timeout=self._timeout,
                error_cb=on_error,
                **self._auth,
            )
        except Exception as exc:
            cause = seen[-1] if seen else exc
            hint = ""
            if isinstance(cause, nats.errors.AuthorizationError) or "uthorization" in str(cause):
                hint = " (check user, password or token)"
            raise DeliveryError(
                f"cannot connect to NATS at {self._where}: {error_text(cause)}{hint}"
            ) from exc
        js = nc.jetstream(timeout=self._timeout)
        if self._stream is not None:
            try:
                await js.stream_info(self._stream)
            except nats.js.errors.NotFoundError as exc:
                await nc.close()
                raise DeliveryError(
                    f"JetStream stream {self._stream!r} does not exist on {self._where}: "
                    "create it first (nats stream add) with subjects matching "
                    f"{self._subject!r}"
                ) from exc
            except Exception as exc:
                await nc.close()
                raise DeliveryError(
                    f"cannot look up JetStream stream {self._stream!r} on {self._where} "
                    f"(is JetStream enabled, nats-server -js?): {error_text(exc)}"
                ) from exc
        self._nc, self._js = nc, js

    async def _disconnect(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):  # already broken: nothing left to release
                async with asyncio.timeout(self._timeout):
                    await nc.close()

    def message(self, event: events.ListenerEvent) -> tuple[str, bytes, dict[str, str]]:
        """Subject, payload and headers for one event."""
        data = event.to_dict()
        payload = json.dumps(data, separators=(",", ":")).encode("utf-8")
        headers = {
            "Nats-Msg-Id": event.id,
            "event-type": event.type.value,
            "event-sequence": str(event.sequence),
        }
        if event.traceparent:  # the publisher's trace, for a consumer to continue
            headers["traceparent"] = event.traceparent
        if self._cloud_source is not None:  # the NATS protocol binding's binary mode
            headers["content-type"] = cloudevents.DATA_CONTENT_TYPE
            headers.update(
                cloudevents.binary_headers(event, cloudevents.NATS_PREFIX, self._cloud_source)
            )
        return render(self._subject, data), payload, headers

    async def on_event(self, event: events.ListenerEvent) -> None:
        await self.on_events([event])

    async def on_events(self, batch: Sequence[events.ListenerEvent]) -> None:
        """Publishes the batch in order, then waits for every acknowledgement."""
        if not batch:
            return
        if self._nc is None or self._nc.is_closed:
            await self._disconnect()
            await self._connect()
        prepared = [self.message(event) for event in batch]
        futures: list[asyncio.Future[Any]] = []
        try:
            for subject, payload, headers in prepared:
                futures.append(
                    await self._js.publish_async(
                        subject, payload, stream=self._stream, headers=headers
                    )
                )
            _, pending = await asyncio.wait(futures, timeout=self._timeout)
        except Exception as exc:
            for future in futures:
                future.cancel()
            await self._disconnect()
            raise DeliveryError(
                f"publishing to NATS at {self._where} failed: {error_text(exc)}"
            ) from exc
        for future in pending:
            future.cancel()  # frees the client's slot for the acknowledgement that never came
        for event, (subject, _, _), future in zip(batch, prepared, futures, strict=True):
            if future in pending:
                await self._disconnect()
                raise DeliveryError(
                    f"no JetStream acknowledgement within {self._timeout:g}s for event "
                    f"{event.id} on subject {subject!r} from {self._where}"
                )
            error = future.exception()
            if error is not None:
                await self._failed(event, subject, error)

    async def _failed(self, event: events.ListenerEvent, subject: str, exc: BaseException) -> None:
        if isinstance(exc, nats.js.errors.NoStreamResponseError):
            raise DeliveryError(
                f"no JetStream stream on {self._where} captures subject {subject!r} (event "
                f"{event.id}): create one whose subjects match it, e.g. nats stream add "
                "--subjects 'listener.>'"
            ) from exc
        if isinstance(exc, nats.js.errors.APIError):
            raise DeliveryError(
                f"JetStream refused event {event.id} on subject {subject!r}: "
                f"{exc.description or error_text(exc)}"
            ) from exc
        await self._disconnect()
        raise DeliveryError(
            f"publishing event {event.id} to {subject!r} on {self._where} failed: {error_text(exc)}"
        ) from exc
