"""The RabbitMQ listener: publishes each event to an exchange with publisher confirms.

Messages are persistent JSON (``event.to_dict()``) with ``message_id`` = event id, so consumers
de-duplicate redeliveries; the routing key comes from a template over the event's fields.

A batch is published on one channel and its confirms awaited together: aiormq writes the
publishes of a channel one at a time in call order, so the broker receives them in order while
the round trips overlap. Any connection or channel failure drops the connection; the next
attempt (the alert server retries with backoff) connects afresh and declares the exchange
again, so an outage heals without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
import aiormq.exceptions
from yarl import URL

from listener_common import DeliveryError, ListenerPlugin, cloudevents, events, params, templates
from listener_common.errors import error_text

_UNSAFE = " \t\r\n.*>#"
TEMPLATE_FIELDS = templates.TEMPLATE_FIELDS


def check_template(template: str, what: str) -> None:
    """Rejects a template naming a field no event has (a typo would silently give ``_``)."""
    templates.check_template(template, what, _UNSAFE)


def render(template: str, data: Mapping[str, Any]) -> str:
    """The routing key (or header value) of one event (``templates.render_template``)."""
    return templates.render_template(template, data, _UNSAFE)


class RabbitMQListener(ListenerPlugin):
    """Publishes to one durable exchange over one connection per listener instance."""

    @classmethod
    def params(cls) -> list[params.PluginParam]:
        return [
            params.Input(
                "url",
                title="AMQP URL",
                required=True,
                value="amqp://guest@127.0.0.1:5672/",
                info="amqp://user@host:port/vhost (amqps:// for TLS); the password may be in "
                "the URL or, better, in the password field. Secret, as it may hold one.",
                secret=True,
            ),
            params.Password("password", title="Password", info="Replaces any password in the URL."),
            params.Input(
                "exchange",
                title="Exchange",
                required=True,
                info="Declared durable if it does not exist.",
            ),
            params.Select(
                "exchangeType",
                title="Exchange type",
                value="topic",
                options=["topic", "direct", "fanout", "headers"],
            ),
            params.Input(
                "routingKey",
                title="Routing key template",
                value="listener.{type}.{project_name}",
                info="Event fields in braces; {type} is lower case, e.g. task_fail.",
            ),
            params.Switch(
                "confirms",
                title="Publisher confirms",
                value=True,
                info="Wait until the broker has taken each message (recommended).",
            ),
            params.Switch(
                "persistent", title="Persistent messages", value=True, info="Survive a restart."
            ),
            params.Switch(
                "mandatory",
                title="Fail unroutable messages",
                value=False,
                info="With confirms on, fail the event when no queue is bound to take it.",
            ),
            params.Select(
                "format",
                title="Message format",
                value="json",
                options=[
                    ("Event JSON with event-type and sequence headers", "json"),
                    ("CloudEvents 1.0, binary mode (cloudEvents_ headers)", "cloudevents"),
                ],
                info="CloudEvents binary mode keeps the body (the event JSON) and adds the "
                "CloudEvents attributes as headers (cloudEvents_id, cloudEvents_type, …), per "
                "the CloudEvents AMQP protocol binding.",
            ),
            params.Input(
                "source",
                title="CloudEvents source",
                value=cloudevents.DEFAULT_SOURCE,
                info="The CloudEvents 'source' attribute (a URI reference).",
            ),
            params.InputNumber("timeout", title="Timeout (s)", value=10, min=0.1, max=120),
        ]

    def __init__(self) -> None:
        self._url = URL()
        self._where = ""  # the URL without its password: what messages show
        self._exchange_name = ""
        self._exchange_type = aio_pika.ExchangeType.TOPIC
        self._routing_key = ""
        self._confirms = True
        self._persistent = True
        self._mandatory = False
        self._timeout = 10.0
        self._cloud_source: str | None = None
        self._connection: Any = None
        self._channel: Any = None
        self._exchange: Any = None

    async def open(self, config: dict[str, Any]) -> None:
        url = URL(str(config["url"]).strip())
        if url.scheme not in ("amqp", "amqps") or not url.host:
            raise ValueError("url must look like amqp://user@host:5672/vhost (or amqps://)")
        password = str(config.get("password") or "")
        if password:
            if not url.user:
                raise ValueError("a password is set but the url names no user (amqp://user@…)")
            url = url.with_password(password)
        self._url = url
        self._where = str(url.with_password(None)) if url.password else str(url)
        self._exchange_name = str(config["exchange"])
        self._exchange_type = aio_pika.ExchangeType(config.get("exchangeType") or "topic")
        self._routing_key = str(config.get("routingKey") or "")
        check_template(self._routing_key, "routingKey")
        self._confirms = bool(config.get("confirms", True))
        self._persistent = bool(config.get("persistent", True))
        self._mandatory = bool(config.get("mandatory", False)) and self._confirms
        self._timeout = float(config.get("timeout") or 10)
        self._cloud_source = (
            str(config.get("source") or cloudevents.DEFAULT_SOURCE)
            if config.get("format") == "cloudevents"
            else None
        )
        await self._connect()

    async def close(self) -> None:
        await self._disconnect()

    async def _connect(self) -> None:
        try:
            connection = await aio_pika.connect(self._url, timeout=self._timeout)
        except aiormq.exceptions.ProbableAuthenticationError as exc:
            raise DeliveryError(
                f"RabbitMQ at {self._where} refused the login (check user and password): {exc}"
            ) from exc
        except (aiormq.exceptions.InvalidFrameError, aiormq.exceptions.ConnectionClosed) as exc:
            raise DeliveryError(
                f"RabbitMQ at {self._where} closed the connection while opening it (does the "
                f"virtual host exist, and may this user use it?): {error_text(exc)}"
            ) from exc
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            raise DeliveryError(
                f"cannot connect to RabbitMQ at {self._where}: {error_text(exc)}"
            ) from exc
        try:
            channel = await connection.channel(
                publisher_confirms=self._confirms, on_return_raises=self._mandatory
            )
            exchange = await channel.declare_exchange(
                self._exchange_name, self._exchange_type, durable=True, timeout=self._timeout
            )
        except BaseException as exc:
            await connection.close()
            if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
                raise DeliveryError(
                    f"exchange {self._exchange_name!r} already exists with other settings "
                    f"(this instance wants a durable {self._exchange_type.value} exchange): {exc}"
                ) from exc
            if isinstance(exc, aiormq.exceptions.ChannelAccessRefused):
                raise DeliveryError(
                    f"RabbitMQ at {self._where} denies declaring exchange "
                    f"{self._exchange_name!r}: {exc}"
                ) from exc
            if isinstance(exc, Exception):
                raise DeliveryError(
                    f"cannot declare exchange {self._exchange_name!r} on RabbitMQ at "
                    f"{self._where}: {error_text(exc)}"
                ) from exc
            raise
        self._connection, self._channel, self._exchange = connection, channel, exchange

    async def _disconnect(self) -> None:
        connection = self._connection
        self._connection = self._channel = self._exchange = None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):  # already broken: nothing left to release
                async with asyncio.timeout(self._timeout):
                    await connection.close()

    def _headers(self, event: events.ListenerEvent) -> dict[str, Any]:
        """``event-type`` and ``sequence``; in CloudEvents binary mode also the attributes as
        ``cloudEvents_*`` headers (the AMQP binding's application properties; the body and
        its content type, application/json, stay as they are)."""
        headers: dict[str, Any] = {"event-type": event.type.value, "sequence": event.sequence}
        if event.traceparent:  # the publisher's trace, for a consumer to continue
            headers["traceparent"] = event.traceparent
        if self._cloud_source is not None:
            headers.update(
                cloudevents.binary_headers(event, cloudevents.AMQP_PREFIX, self._cloud_source)
            )
        return headers

    def message(self, event: events.ListenerEvent) -> tuple[aio_pika.Message, str]:
        """The AMQP message and routing key for one event."""
        data = event.to_dict()
        body = json.dumps(data, separators=(",", ":")).encode("utf-8")
        message = aio_pika.Message(
            body,
            content_type="application/json",
            message_id=event.id,
            type=event.type.value,
            timestamp=event.event_time,
            app_id="dolphinscheduler-listener",
            headers=self._headers(event),
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT
                if self._persistent
                else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
        )
        return message, render(self._routing_key, data)

    async def on_event(self, event: events.ListenerEvent) -> None:
        await self.on_events([event])

    async def on_events(self, batch: Sequence[events.ListenerEvent]) -> None:
        """Publishes the batch in order and waits for every confirm; all or nothing."""
        if not batch:
            return
        if self._connection is None or self._connection.is_closed or self._channel.is_closed:
            await self._disconnect()
            await self._connect()
        exchange = self._exchange
        prepared = [self.message(event) for event in batch]
        # Tasks start in creation order and each queues its frames before yielding, so the
        # broker sees the batch in order; their confirms are then awaited together.
        results = await asyncio.gather(
            *(
                exchange.publish(message, key, mandatory=self._mandatory, timeout=self._timeout)
                for message, key in prepared
            ),
            return_exceptions=True,
        )
        for event, (_, key), result in zip(batch, prepared, results, strict=True):
            if isinstance(result, BaseException):
                await self._failed(event, key, result)

    async def _failed(self, event: events.ListenerEvent, key: str, exc: BaseException) -> None:
        where = f"exchange {self._exchange_name!r} on {self._where}"
        if isinstance(exc, aiormq.exceptions.PublishError):
            raise DeliveryError(
                f"no queue bound to {where} takes routing key {key!r} "
                f"(event {event.id}; mandatory is on)"
            ) from exc
        if isinstance(exc, aiormq.exceptions.DeliveryError):
            raise DeliveryError(f"{where} refused event {event.id} (nack): {exc}") from exc
        await self._disconnect()  # whatever broke, the next attempt starts from a new connection
        if isinstance(exc, TimeoutError):
            raise DeliveryError(
                f"{where} did not confirm event {event.id} within {self._timeout:g}s"
            ) from exc
        if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
            raise DeliveryError(f"{where} no longer exists: {exc}") from exc
        raise DeliveryError(
            f"publishing event {event.id} to {where} failed: {error_text(exc)}"
        ) from exc
