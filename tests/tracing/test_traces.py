"""Traces end to end, on real servers with real plugins: a publish carrying the caller's
``traceparent`` makes a publish span, its context is stored with the event, the batch's
delivery span links to it, and the destination (a real HTTP receiver; RabbitMQ) receives a
``traceparent`` of the publisher's trace. Spans go to the SDK's in-memory exporter. Off (the
default), nothing is stored and nothing is sent on."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import AsyncIterator
from concurrent import futures
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import grpc
import httpx
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from event_store import events
from listener.v1 import event_service_pb2
from listener_common import cloudevents
from listener_common import events as events_sdk
from listener_core.settings import TraceSettings
from listener_core.tracing import Tracing, collector_endpoint
from tests.plugins.support import (
    FAST_RETRY,
    create_instance,
    install,
    load_module,
    make_event,
    require_service,
    wait_caught_up,
)
from tests.support.databases import sqlite_url
from tests.support.samples import event_type, sample_event
from tests.support.servers import Clients, Pair, eventually, running_pair

#: The caller's context: a span of the scheduler's trace (random ids, sampled).
TRACE_ID = uuid.uuid4().hex
CALLER_SPAN = uuid.uuid4().hex[:16]
CALLER = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
PUBLISH = "/listener.v1.EventService/PublishEvent"


@dataclass
class Receiver:
    """A real HTTP endpoint that records each request's headers."""

    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        return web.Response(text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    found.url = f"http://127.0.0.1:{port}/hook"
    yield found
    await runner.cleanup()


@asynccontextmanager
async def traced_pair(tmp_path: Path) -> AsyncIterator[tuple[Pair, InMemorySpanExporter]]:
    """Both servers in this process, each tracing into one in-memory exporter."""
    exporter = InMemorySpanExporter()
    api = Tracing(SimpleSpanProcessor(exporter), "listener-api-server")
    alert = Tracing(SimpleSpanProcessor(exporter), "listener-alert-server")
    async with running_pair(
        sqlite_url(tmp_path), tmp_path, api_tracing=api, alert_tracing=alert, **FAST_RETRY
    ) as pair:
        yield pair, exporter


async def publish_traced(clients: Clients) -> str:
    reply = await clients.events.PublishEvent(
        event_service_pb2.PublishEventRequest(event=sample_event("task_fail", 1)),
        metadata=(("traceparent", CALLER),),
    )
    return str(reply.id)


async def publish_to_webhook(c: Clients, receiver: Receiver, tmp_path: Path) -> str:
    """A webhook instance posting TASK_FAIL events to ``receiver``, then one traced publish,
    delivered; returns the event's id."""
    await install(c, "webhook", tmp_path)
    await create_instance(c, "hook", "webhook", {"url": receiver.url}, [event_type("TASK_FAIL")])
    event_id = await publish_traced(c)
    await wait_caught_up(c, "hook")
    return event_id


def _spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def _stored_trace(pair: Pair, event_id: str) -> str | None:
    async with pair.api.store.reader() as session:
        [stored] = [e for e in await events.read_after(session, 0, None, 10) if e.id == event_id]
    return stored.traceparent


async def test_publish_to_webhook_carries_the_publishers_trace(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with traced_pair(tmp_path) as (pair, exporter):
        event_id = await publish_to_webhook(pair.clients, receiver, tmp_path)
        delivery = "deliver listenerInstances/hook"
        await eventually(lambda: bool(_spans(exporter, delivery)), timeout=30)

        [publish] = _spans(exporter, PUBLISH)
        stored = await _stored_trace(pair, event_id)

    # The publish span continues the caller's trace, as the caller's span's child.
    context = publish.get_span_context()
    assert publish.kind == trace.SpanKind.SERVER
    assert f"{context.trace_id:032x}" == TRACE_ID
    assert publish.parent is not None and f"{publish.parent.span_id:016x}" == CALLER_SPAN
    # Its context is what the store kept with the event ...
    assert stored == f"00-{TRACE_ID}-{context.span_id:016x}-01"
    # ... and what the receiver got: the publisher's trace id, the publish span as parent.
    [request] = receiver.headers
    assert request["webhook-id"] == event_id
    assert request["traceparent"] == stored
    assert request["traceparent"].split("-")[1] == TRACE_ID
    # One delivery span for the batch, linked to the publish span, in a trace of its own.
    [span] = _spans(exporter, delivery)
    assert span.kind == trace.SpanKind.CONSUMER
    links = [(link.context.trace_id, link.context.span_id) for link in span.links]
    assert links == [(context.trace_id, context.span_id)]
    assert span.context.trace_id != context.trace_id
    assert span.attributes is not None
    assert span.attributes["listener.instance"] == "hook"
    assert span.attributes["listener.plugin"] == "webhook"
    assert span.attributes["listener.delivered"] == 1
    assert span.status.is_ok
    # Health checks and reflection make no spans; the admin calls do.
    names = {s.name for s in exporter.get_finished_spans()}
    assert not any(n.startswith("/grpc.") for n in names)
    assert "/listener.v1.PluginService/CreatePlugin" in names


async def test_off_by_default_nothing_is_stored_or_sent_on(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with running_pair(sqlite_url(tmp_path), tmp_path, **FAST_RETRY) as pair:
        assert pair.api.tracing is None and pair.alert.tracing is None
        event_id = await publish_to_webhook(pair.clients, receiver, tmp_path)
        assert await _stored_trace(pair, event_id) is None
    [request] = receiver.headers
    assert request["webhook-id"] == event_id
    assert "traceparent" not in request


def test_the_collector_comes_from_the_key_or_the_standard_variables() -> None:
    key = TraceSettings("http://collector:4317")
    assert collector_endpoint(TraceSettings(), {}) == ""
    assert collector_endpoint(key, {}) == "http://collector:4317"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://all:4317"}
    assert collector_endpoint(TraceSettings(), env) == "http://all:4317"
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "https://traces:4317"
    assert collector_endpoint(TraceSettings(), env) == "https://traces:4317"
    assert collector_endpoint(key, env) == "http://collector:4317"  # the key wins
    for off in ({"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}):
        assert collector_endpoint(key, {**env, **off}) == ""
    assert Tracing.from_settings(TraceSettings(), "x", {}) is None


RABBIT_HOST, RABBIT_PORT = os.environ.get("LISTENER_TEST_RABBITMQ", "127.0.0.1:5672").rsplit(":", 1)


async def test_rabbitmq_messages_carry_the_publishers_trace(tmp_path: Path) -> None:
    require_service("RabbitMQ", RABBIT_HOST, int(RABBIT_PORT), "rabbitmq-server -detached")
    url = f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/"
    name = f"lt-trace-{uuid.uuid4().hex[:12]}"
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(f"{name}-q", durable=False, auto_delete=False)
    await queue.bind(exchange, "listener.#")
    try:
        async with traced_pair(tmp_path) as (pair, exporter):
            c = pair.clients
            await install(c, "rabbitmq", tmp_path)
            values = {"url": url.replace("guest:guest@", "guest@"), "password": "guest"}
            await create_instance(
                c, "mq", "rabbitmq", {**values, "exchange": name}, [event_type("TASK_FAIL")]
            )
            event_id = await publish_traced(c)
            await wait_caught_up(c, "mq")
            [publish] = _spans(exporter, PUBLISH)

        message = await eventually(lambda: queue.get(no_ack=True, fail=False), timeout=20)
        assert message.message_id == event_id
        span_id = f"{publish.get_span_context().span_id:016x}"
        assert message.headers["traceparent"] == f"00-{TRACE_ID}-{span_id}-01"
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await channel.exchange_delete(name)
        await connection.close()


def test_every_bundled_destination_passes_the_trace_on() -> None:
    """What each plugin sends with a traced event, and without one (no broker needed)."""
    bare = make_event(1)
    event = dataclasses.replace(bare, traceparent=CALLER)
    kafka, nats, redis, webhook = (load_module(n) for n in ("kafka", "nats", "redis", "webhook"))
    assert ("traceparent", CALLER.encode()) in kafka.message_headers(event)
    assert "traceparent" not in dict(kafka.message_headers(bare))
    assert nats.NatsListener().message(event)[2]["traceparent"] == CALLER
    assert "traceparent" not in nats.NatsListener().message(bare)[2]
    assert redis.entry_fields(event)["traceparent"] == CALLER
    assert "traceparent" not in redis.entry_fields(bare)
    assert webhook.WebhookListener().request_parts(event, 0)[1]["traceparent"] == CALLER
    assert "traceparent" not in webhook.WebhookListener().request_parts(bare, 0)[1]
    # CloudEvents' Distributed Tracing extension, in binary mode too (Kafka's ce_ headers).
    assert cloudevents.attributes(event)["traceparent"] == CALLER
    assert cloudevents.binary_headers(event, cloudevents.KAFKA_PREFIX)["ce_traceparent"] == CALLER
    assert "traceparent" not in cloudevents.attributes(bare)
    # The event's dict (every body) has it only when there is one, and reads it back.
    assert event.to_dict()["traceparent"] == CALLER and "traceparent" not in bare.to_dict()
    assert events_sdk.from_dict(event.to_dict()) == event


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """A real OTLP/gRPC endpoint (synchronous, on its own threads: the exporter's final flush
    blocks the servers' event loop while it sends)."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(self, request: Any, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> dict[str, set[str]]:
        """Span names by the service.name of the resource that sent them."""
        found: dict[str, set[str]] = {}
        for request in self.requests:
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                names = found.setdefault(attributes.get("service.name", ""), set())
                for scope in resource_spans.scope_spans:
                    names.update(span.name for span in scope.spans)
        return found


async def test_otel_endpoint_sends_the_spans_to_an_otlp_collector(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The configured path, not a test exporter: ``otel_endpoint`` → the OTLP/gRPC exporter
    behind a batching processor, flushed when the servers stop."""
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        async with running_pair(
            sqlite_url(tmp_path), tmp_path, otel_endpoint=endpoint, **FAST_RETRY
        ) as pair:
            assert pair.api.tracing is not None and pair.alert.tracing is not None
            await publish_to_webhook(pair.clients, receiver, tmp_path)
        spans = collector.spans()  # the servers flushed what they held when they stopped
    finally:
        server.stop(0)
    assert PUBLISH in spans["listener-api-server"]
    assert "deliver listenerInstances/hook" in spans["listener-alert-server"]
    assert receiver.headers[0]["traceparent"].split("-")[1] == TRACE_ID


async def test_an_http_publish_continues_the_callers_trace_too(tmp_path: Path) -> None:
    """The HTTP/JSON gateway runs its calls through the same tracing interceptor, with the
    caller's ``traceparent`` header as metadata."""
    async with traced_pair(tmp_path) as (pair, exporter):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{pair.api.http_port}") as http:
            reply = await http.post(
                "/v1/events:publish",
                json={"event": {"taskFail": {"taskName": "extract"}}},
                headers={"traceparent": CALLER},
            )
        assert reply.status_code == 200, reply.text
        stored = await _stored_trace(pair, reply.json()["id"])
    [publish] = _spans(exporter, PUBLISH)
    assert publish.parent is not None and f"{publish.parent.span_id:016x}" == CALLER_SPAN
    assert stored == f"00-{TRACE_ID}-{publish.get_span_context().span_id:016x}-01"
