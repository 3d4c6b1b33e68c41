"""OpenTelemetry traces: a publish span per call, a delivery span per batch, W3C trace context
stored with each event and handed to plugins.

Off unless a collector is named (``otel_endpoint``, or the standard
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``);
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` keeps it off. Off, the servers
hold ``None`` instead of a :class:`Tracing`: no interceptor is installed, no span object is
made, and nothing but a ``None`` check is on the publish and delivery paths.

On:

* **API server**: OpenTelemetry's own gRPC server instrumentation (``aio_server_interceptor``,
  outside the servers' pipeline) makes a SERVER span for every public call, the child of the
  caller's ``traceparent`` metadata; ``grpc.*`` services (health, reflection) are left out.
  ``PublishEvent(s)`` stores that span's context (:meth:`Tracing.traceparent`) with its events.
* **Alert server**: each batch handed to a plugin runs in a CONSUMER span
  (:meth:`Tracing.delivery`) linked to the publish spans of its events: a batch has many
  parents, which is what span links are for.
* **Destinations**: plugins get each event's stored context as ``event.traceparent`` and pass
  it on (the webhook's ``traceparent`` header, the brokers' message headers), so a consumer
  continues the publisher's trace.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from listener_core.settings import TraceSettings

_PROPAGATOR = TraceContextTextMapPropagator()
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def collector_endpoint(settings: TraceSettings, env: Mapping[str, str]) -> str:
    """Where spans go: ``otel_endpoint``, else the standard variables; "" for off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ""
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return ""
    if settings.otel_endpoint:
        return settings.otel_endpoint
    return next((env[name] for name in _ENDPOINT_VARIABLES if env.get(name)), "")


def link_context(traceparent: str) -> trace.SpanContext | None:
    """The span context a stored ``traceparent`` names; None if it is not a valid one."""
    context = _PROPAGATOR.extract({"traceparent": traceparent})
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


class Tracing:
    """A server's tracer and what it traces; built only when tracing is on."""

    def __init__(self, processor: SpanProcessor, service: str) -> None:
        """``processor`` gets every finished span (a batching OTLP exporter in production,
        an in-memory one in tests). ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``
        override ``service``, as the SDK defines; ``OTEL_TRACES_SAMPLER`` picks the sampler
        (default: every trace, or as the caller's trace decided)."""
        named = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service}
        self.provider = TracerProvider(resource=Resource.create(named))
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("listener")

    @classmethod
    def from_settings(
        cls, settings: TraceSettings, service: str, env: Mapping[str, str] | None = None
    ) -> Tracing | None:
        """Tracing to the configured OTLP/gRPC collector, or None when it is off."""
        endpoint = collector_endpoint(settings, os.environ if env is None else env)
        if not endpoint:
            return None
        # Imported here: a server without traces never loads the exporter's gRPC stubs.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter: SpanExporter = OTLPSpanExporter(endpoint=endpoint)
        return cls(BatchSpanProcessor(exporter), service)

    def server_interceptor(self) -> grpc.aio.ServerInterceptor:
        """A SERVER span per call of the public services, the child of the caller's
        ``traceparent`` metadata (OpenTelemetry's gRPC instrumentation)."""
        skip_grpc_services = filters.negate(filters.service_prefix("grpc."))
        interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=self.provider, filter_=skip_grpc_services
        )
        return interceptor

    @staticmethod
    def traceparent() -> str | None:
        """The current span's context as a W3C ``traceparent`` (in a publish call: the
        publish span's), or None outside any span."""
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier.get("traceparent")

    @contextmanager
    def delivery(
        self, instance_id: str, plugin_id: str, traceparents: Iterable[str | None]
    ) -> Iterator[trace.Span]:
        """A CONSUMER span around handing one batch to an instance's plugin, linked to the
        publish span of each of its events (one link per distinct publish)."""
        links = [
            trace.Link(found)
            for found in (link_context(tp) for tp in dict.fromkeys(traceparents) if tp)
            if found is not None
        ]
        with self.tracer.start_as_current_span(
            f"deliver listenerInstances/{instance_id}",
            context=otel_context.Context(),  # a trace of its own: a batch has many parents
            kind=trace.SpanKind.CONSUMER,
            links=links,
            attributes={"listener.instance": instance_id, "listener.plugin": plugin_id},
        ) as span:
            yield span

    @staticmethod
    def outcome(span: trace.Span, events: int, delivered: int, error: str | None) -> None:
        """Records on a delivery span how many of its events the plugin took, and the
        failure that stopped it (the span's status is then ERROR)."""
        span.set_attribute("listener.events", events)
        span.set_attribute("listener.delivered", delivered)
        if error is not None:
            span.set_status(trace.StatusCode.ERROR, error)

    def shutdown(self) -> None:
        """Exports what is still buffered, then stops."""
        self.provider.shutdown()
