"""The Kafka listener: produces each event to a topic with aiokafka.

The message key is the event's workflow instance id when it has one, else the workflow or task
code it is about, else its id: Kafka keeps one key's messages in one partition, in order, so
one run's (or one definition's) events are consumed in the order they happened. The value is
the event's ``to_dict()`` as JSON; headers ``event-id`` and ``event-type`` let consumers
de-duplicate and filter without parsing the value, and ``traceparent`` (when the servers trace)
continues the publisher's trace. The record timestamp is the event time.

A batch is handed to the producer at once and its acknowledgements awaited together; aiokafka
keeps one batch in flight per partition, so order within a partition survives its retries.
The producer reconnects to the brokers by itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import aiokafka
import aiokafka.codec
import aiokafka.errors
import aiokafka.helpers

from listener_common import DeliveryError, ListenerPlugin, cloudevents, events, params
from listener_common.errors import error_text

#: Codecs beyond gzip need cramjam in the alert server's environment.
_CODECS = {
    "gzip": aiokafka.codec.has_gzip,
    "snappy": aiokafka.codec.has_snappy,
    "lz4": aiokafka.codec.has_lz4,
    "zstd": aiokafka.codec.has_zstd,
}
#: Fields tried in turn for the message key (run first, then definition).
KEY_FIELDS = ("workflow_instance_id", "workflow_definition_code", "task_code", "code")
_ACKS: dict[str, int | str] = {"all": "all", "1": 1, "0": 0}


def producer_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """``AIOKafkaProducer`` arguments from an instance's params; ValueError if inconsistent."""
    servers = [s.strip() for s in str(config["bootstrapServers"]).split(",") if s.strip()]
    if not servers:
        raise ValueError("bootstrapServers: give at least one host:port")
    acks = str(config.get("acks") or "all")
    if acks not in _ACKS:
        raise ValueError(f"acks must be one of {', '.join(_ACKS)}")
    kwargs: dict[str, Any] = {
        "bootstrap_servers": servers,
        "client_id": str(config.get("clientId") or "dolphinscheduler-listener"),
        "acks": _ACKS[acks],
        "request_timeout_ms": int(float(config.get("timeout") or 10) * 1000),
    }
    compression = str(config.get("compression") or "none")
    if compression != "none":
        has_codec = _CODECS.get(compression)
        if has_codec is None:
            raise ValueError(f"compression must be one of none, {', '.join(_CODECS)}")
        if not has_codec():
            raise ValueError(
                f"compression {compression} needs the Python package cramjam in the alert "
                "server's environment; it is not installed (gzip needs nothing)"
            )
        kwargs["compression_type"] = compression
    tls = bool(config.get("tls", False))
    mechanism = str(config.get("saslMechanism") or "none")
    if mechanism != "none":
        username, password = str(config.get("username") or ""), str(config.get("password") or "")
        if not username or not password:
            raise ValueError(f"saslMechanism {mechanism} needs a username and a password")
        kwargs.update(
            security_protocol="SASL_SSL" if tls else "SASL_PLAINTEXT",
            sasl_mechanism=mechanism,
            sasl_plain_username=username,
            sasl_plain_password=password,
        )
    else:
        kwargs["security_protocol"] = "SSL" if tls else "PLAINTEXT"
    if tls:
        kwargs["ssl_context"] = aiokafka.helpers.create_ssl_context()
    return kwargs


def message_key(event: events.ListenerEvent) -> bytes:
    """The partitioning key: the run, else the definition the event is about, else its id."""
    for name in KEY_FIELDS:
        value = getattr(event, name, 0)
        if value:
            return str(value).encode("ascii")
    return event.id.encode("utf-8")


def message_headers(
    event: events.ListenerEvent, cloud_source: str | None = None
) -> list[tuple[str, bytes]]:
    """``event-id``, ``event-type`` and the event's ``traceparent`` when it has one; with a
    CloudEvents source, also the Kafka protocol binding's binary mode: ``ce_*`` headers and
    ``content-type`` for the (unchanged) value."""
    found = [("event-id", event.id.encode("utf-8")), ("event-type", event.type.value.encode())]
    if event.traceparent:
        found.append(("traceparent", event.traceparent.encode("ascii")))
    if cloud_source is not None:
        found.append(("content-type", cloudevents.DATA_CONTENT_TYPE.encode()))
        found.extend(
            (name, value.encode("utf-8"))
            for name, value in cloudevents.binary_headers(
                event, cloudevents.KAFKA_PREFIX, cloud_source
            ).items()
        )
    return found


def message_value(event: events.ListenerEvent) -> bytes:
    return json.dumps(event.to_dict(), separators=(",", ":")).encode("utf-8")


def _timestamp_ms(event: events.ListenerEvent) -> int | None:
    return None if event.event_time is None else int(event.event_time.timestamp() * 1000)


class KafkaListener(ListenerPlugin):
    """Produces to one topic with one ``AIOKafkaProducer`` per listener instance."""

    @classmethod
    def params(cls) -> list[params.PluginParam]:
        return [
            params.Input(
                "bootstrapServers",
                title="Bootstrap servers",
                required=True,
                info="Comma-separated host:port of some brokers of the cluster.",
            ),
            params.Input("topic", title="Topic", required=True, info="Must exist."),
            params.Select(
                "acks",
                title="Acks",
                value="all",
                options=[("all in-sync replicas", "all"), ("leader only", "1"), ("none", "0")],
            ),
            params.Select(
                "compression",
                title="Compression",
                value="none",
                options=["none", "gzip", "snappy", "lz4", "zstd"],
                info="snappy, lz4 and zstd need cramjam in the alert server's environment.",
            ),
            params.Select(
                "format",
                title="Message format",
                value="json",
                options=[
                    ("Event JSON with event-id and event-type headers", "json"),
                    ("CloudEvents 1.0, binary mode (ce_ headers)", "cloudevents"),
                ],
                info="CloudEvents binary mode keeps the body (the event JSON) and adds the "
                "CloudEvents attributes as headers (ce_id, ce_type, …), per the "
                "CloudEvents Kafka protocol binding.",
            ),
            params.Input(
                "source",
                title="CloudEvents source",
                value=cloudevents.DEFAULT_SOURCE,
                info="The CloudEvents 'source' attribute (a URI reference).",
            ),
            params.Switch("tls", title="TLS", value=False, info="Connect with TLS (SSL)."),
            params.Select(
                "saslMechanism",
                title="SASL mechanism",
                value="none",
                options=["none", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
            ),
            params.Input("username", title="SASL user", value=""),
            params.Password("password", title="SASL password"),
            params.Input("clientId", title="Client id", value="dolphinscheduler-listener"),
            params.InputNumber(
                "timeout",
                title="Timeout (s)",
                value=10,
                min=0.1,
                max=120,
                info="Kafka request timeout; keep it below the alert server's handler_timeout.",
            ),
        ]

    def __init__(self) -> None:
        self._producer: Any = None
        self._topic = ""
        self._where = ""
        self._cloud_source: str | None = None

    def _make_producer(self, **kwargs: Any) -> Any:
        """Builds the producer; the seam unit tests replace to work without a broker."""
        return aiokafka.AIOKafkaProducer(**kwargs)

    async def open(self, config: dict[str, Any]) -> None:
        kwargs = producer_kwargs(config)
        self._topic = str(config["topic"]).strip()
        if config.get("format") == "cloudevents":
            self._cloud_source = str(config.get("source") or cloudevents.DEFAULT_SOURCE)
        self._where = ",".join(kwargs["bootstrap_servers"])
        producer = self._make_producer(**kwargs)
        try:
            await producer.start()
        except Exception as exc:
            await _quietly_stop(producer)
            hint = ""
            if isinstance(
                exc,
                aiokafka.errors.AuthenticationFailedError
                | aiokafka.errors.SaslAuthenticationFailed
                | aiokafka.errors.AuthenticationMethodNotSupported,
            ):
                hint = " (check saslMechanism, username and password)"
            raise DeliveryError(
                f"cannot connect to Kafka at {self._where}: {error_text(exc)}{hint}"
            ) from exc
        try:
            await producer.partitions_for(self._topic)
        except Exception as exc:
            await _quietly_stop(producer)
            raise self._topic_error(exc) from exc
        self._producer = producer

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # flushes what is still buffered

    def _topic_error(self, exc: BaseException) -> DeliveryError:
        if isinstance(exc, aiokafka.errors.UnknownTopicOrPartitionError):
            return DeliveryError(
                f"topic {self._topic!r} does not exist on Kafka at {self._where} (and the "
                "brokers do not create topics on first use): create it first"
            )
        if isinstance(exc, aiokafka.errors.TopicAuthorizationFailedError):
            return DeliveryError(
                f"Kafka at {self._where} does not allow this user to write to {self._topic!r}"
            )
        return DeliveryError(
            f"cannot get metadata of topic {self._topic!r} from Kafka at {self._where}: "
            f"{error_text(exc)}"
        )

    async def on_event(self, event: events.ListenerEvent) -> None:
        await self.on_events([event])

    async def on_events(self, batch: Sequence[events.ListenerEvent]) -> None:
        """Queues the whole batch in order, then waits for every acknowledgement."""
        if self._producer is None:
            raise RuntimeError("the Kafka producer is not open")
        futures: list[asyncio.Future[Any]] = []
        failure: DeliveryError | None = None
        for event in batch:
            try:
                futures.append(
                    await self._producer.send(
                        self._topic,
                        value=message_value(event),
                        key=message_key(event),
                        headers=message_headers(event, self._cloud_source),
                        timestamp_ms=_timestamp_ms(event),
                    )
                )
            except Exception as exc:
                failure = self._send_error(event, exc)
                break
        # Wait for what was queued even after a failure, so nothing is left in flight.
        results = await asyncio.gather(*futures, return_exceptions=True)
        for event, result in zip(batch, results, strict=False):
            if isinstance(result, BaseException):
                raise self._send_error(event, result) from result
        if failure is not None:
            raise failure

    def _send_error(self, event: events.ListenerEvent, exc: BaseException) -> DeliveryError:
        if isinstance(
            exc,
            aiokafka.errors.UnknownTopicOrPartitionError
            | aiokafka.errors.TopicAuthorizationFailedError,
        ):
            return self._topic_error(exc)
        return DeliveryError(
            f"Kafka at {self._where} did not take event {event.id} on topic {self._topic!r}: "
            f"{error_text(exc)}"
        )


async def _quietly_stop(producer: Any) -> None:
    try:
        await producer.stop()
    except Exception:  # a producer that never started has nothing to release
        return
