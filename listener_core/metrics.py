"""Prometheus metrics of both servers, each server object with a registry of its own.

A registry per server (not prometheus_client's global one) lets an API server and an alert
server live in one process — as the in-process tests run them — without clashing names, and
lets a stopped server's numbers go with it.

The hooks other modules call (:meth:`ApiMetrics.published`, :meth:`AlertMetrics.delivered`, …)
take whole batches, so the delivery and publish paths pay one label lookup per batch, not per
event. Code that runs without metrics gets :data:`NO_METRICS`, whose hooks do nothing.

The endpoint is a small asyncio HTTP handler on the server's own event loop rather than
prometheus_client's threaded server: collectors that read live delivery state (lag, state)
then run on the loop that changes it, never concurrently with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from listener import event_types

log = logging.getLogger(__name__)

# Seconds, from sub-millisecond RPCs to a plugin stuck behind a five-minute backoff.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
INSTANCE_STATES = ("ACTIVE", "BLOCKED", "PAUSED")


def _version() -> str:
    try:
        return metadata.version("listener-service")
    except metadata.PackageNotFoundError:
        return "unknown"


class ServerMetrics:
    """What every server measures: its RPCs, by method and status code, under this
    project's names and under the names every gRPC dashboard knows
    (``grpc_server_started_total``, ``grpc_server_handled_total``,
    ``grpc_server_handling_seconds`` with ``grpc_type``/``grpc_service``/``grpc_method``/
    ``grpc_code``, as go-grpc-prometheus and the Java and C++ exporters name them); the
    process and Python collectors; and ``listener_build_info``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        Info("listener_build", "The running build", registry=self.registry).info(
            {"version": _version(), "python": platform.python_version()}
        )
        grpc_labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.grpc_started = Counter(
            "grpc_server_started",
            "RPCs started on the server",
            grpc_labels,
            registry=self.registry,
        )
        self.grpc_handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status",
            [*grpc_labels, "grpc_code"],
            registry=self.registry,
        )
        self.grpc_handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Response latency of RPCs handled by the server",
            grpc_labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rpcs = Counter(
            "listener_rpc_requests",
            "RPCs handled, by full method name and gRPC status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "listener_rpc_duration_seconds",
            "Time from the RPC reaching the server to its answer, by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ApiMetrics(ServerMetrics):
    """The API server's metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.events_published = Counter(
            "listener_events_published",
            "Events committed by PublishEvent and PublishEvents, by event type",
            ["type"],
            registry=self.registry,
        )
        self._by_type = {
            n: self.events_published.labels(name) for n, name in event_types.NAMES.items()
        }

    def published(self, items: Sequence[tuple[int, bytes]]) -> None:
        """Counts a committed publish: ``items`` are its (type, body) pairs."""
        if len(items) == 1:
            self._by_type[items[0][0]].inc()
            return
        counts: dict[int, int] = {}
        for event_type, _ in items:
            counts[event_type] = counts.get(event_type, 0) + 1
        for event_type, n in counts.items():
            self._by_type[event_type].inc(n)


@dataclass(frozen=True)
class InstanceSample:
    """One running instance as the alert server sees it at scrape time."""

    instance_id: str
    state: str
    lag_events: int
    attempts: int


class _InstanceCollector(Collector):
    """Reads the runners' state when scraped, so nothing is kept up to date in between."""

    def __init__(self, source: Callable[[], Iterable[InstanceSample]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "listener_instance_lag_events",
            "Events in the log past the instance's delivered sequence (an upper bound of its "
            "pending count: events of types it does not take count too)",
            labels=["instance"],
        )
        state = GaugeMetricFamily(
            "listener_instance_state",
            "1 for the instance's current delivery state, 0 for the others",
            labels=["instance", "state"],
        )
        attempts = GaugeMetricFamily(
            "listener_instance_failed_attempts",
            "Failed attempts at the instance's head event (0 when it is not blocked)",
            labels=["instance"],
        )
        for sample in self.source():
            lag.add_metric([sample.instance_id], sample.lag_events)
            attempts.add_metric([sample.instance_id], sample.attempts)
            for name in INSTANCE_STATES:
                state.add_metric([sample.instance_id, name], 1.0 if sample.state == name else 0.0)
        yield lag
        yield state
        yield attempts


class AlertMetrics(ServerMetrics):
    """The alert server's metrics: deliveries, failures, parking, latency, plugin loads."""

    def __init__(self) -> None:
        super().__init__()
        labels = ["instance"]
        self.events_delivered = Counter(
            "listener_events_delivered",
            "Events a plugin returned from, by listener instance",
            labels,
            registry=self.registry,
        )
        self.delivery_failures = Counter(
            "listener_delivery_failures",
            "Failed delivery attempts (an event or a batch), by listener instance",
            labels,
            registry=self.registry,
        )
        self.events_parked = Counter(
            "listener_events_parked",
            "Events moved to the dead-letter list, by listener instance",
            labels,
            registry=self.registry,
        )
        self.events_filtered = Counter(
            "listener_events_filtered",
            "Events an instance's filter left out (never handed to its plugin), by instance",
            labels,
            registry=self.registry,
        )
        self.delivery_latency = Histogram(
            "listener_delivery_latency_seconds",
            "Time from an event's publish to its plugin returning",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.notify_stream_messages = Counter(
            "listener_notify_stream_messages",
            "Wake-ups received on NotifyStream streams, each handled as one Notify call",
            registry=self.registry,
        )
        self.plugin_load_seconds = Histogram(
            "listener_plugin_load_seconds",
            "Time to load a plugin package (import, or start its child process)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def watch_instances(self, source: Callable[[], Iterable[InstanceSample]]) -> None:
        """Exports per-instance lag and state, read from ``source`` at each scrape."""
        self.registry.register(_InstanceCollector(source))

    def delivered(self, instance_id: str, publish_times: Iterable[datetime]) -> None:
        """Counts a delivered batch and observes each event's publish-to-delivery latency.

        Events published together share a publish time, so a batch is observed once per run
        of equal times, weighted by its length (one observe per event cost a tenth of the
        alert server's CPU with many instances)."""
        now = time.time()
        total = 0
        runs: list[list[Any]] = []  # [publish time, count]
        for published in publish_times:
            total += 1
            if runs and runs[-1][0] == published:
                runs[-1][1] += 1
            else:
                runs.append([published, 1])
        for published, count in runs:
            _observe_many(self.delivery_latency, now, published, count)
        if total:
            self.events_delivered.labels(instance_id).inc(total)

    def failed(self, instance_id: str) -> None:
        self.delivery_failures.labels(instance_id).inc()

    def parked(self, instance_id: str) -> None:
        self.events_parked.labels(instance_id).inc()

    def filtered(self, instance_id: str, count: int) -> None:
        self.events_filtered.labels(instance_id).inc(count)

    def plugin_loaded(self, seconds: float) -> None:
        self.plugin_load_seconds.observe(seconds)


def _observe_many(histogram: Histogram, now: float, published: datetime, count: int) -> None:
    """``count`` observations of the latency since ``published``, in one step."""
    if published.tzinfo is None:
        published = published.replace(tzinfo=UTC)
    amount = max(0.0, now - published.timestamp())
    bounds = getattr(histogram, "_upper_bounds", None)
    if bounds is None or count == 1:  # prometheus_client's internals moved: the plain way
        for _ in range(count):
            histogram.observe(amount)
        return
    histogram._sum.inc(amount * count)
    for i, bound in enumerate(bounds):
        if amount <= bound:
            histogram._buckets[i].inc(count)
            break


class NullMetrics:
    """Every hook, doing nothing: the default where no server wired metrics in."""

    def published(self, items: Sequence[tuple[int, bytes]]) -> None:
        pass

    def delivered(self, instance_id: str, publish_times: Iterable[datetime]) -> None:
        pass

    def failed(self, instance_id: str) -> None:
        pass

    def parked(self, instance_id: str) -> None:
        pass

    def filtered(self, instance_id: str, count: int) -> None:
        pass

    def plugin_loaded(self, seconds: float) -> None:
        pass


NO_METRICS = NullMetrics()


# -- the /metrics endpoint ------------------------------------------------------------------


def _split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"metrics address {addr!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsEndpoint:
    """``GET /metrics`` (Prometheus text format) on ``addr``; ``port`` is the bound port."""

    def __init__(self, server: asyncio.Server, registry: CollectorRegistry) -> None:
        self._server = server
        self.registry = registry
        self.port: int = server.sockets[0].getsockname()[1]

    @classmethod
    async def start(cls, addr: str, registry: CollectorRegistry) -> MetricsEndpoint:
        host, port = _split_addr(addr)
        holder: list[MetricsEndpoint] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await holder[0]._handle(reader, writer)

        server = await asyncio.start_server(handle, host, port, reuse_address=True)
        endpoint = cls(server, registry)
        holder.append(endpoint)
        log.info("metrics on http://%s:%d/metrics", host, endpoint.port)
        return endpoint

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10.0):
                head = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            if method not in ("GET", "HEAD"):
                status, body, ctype = "405 Method Not Allowed", b"GET only\n", "text/plain"
            elif path in ("/metrics", "/"):
                status, ctype = "200 OK", CONTENT_TYPE_LATEST
                body = generate_latest(self.registry)
            else:
                status, body, ctype = "404 Not Found", b"try /metrics\n", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
                + (body if method != "HEAD" else b"")
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        except Exception:
            log.exception("metrics endpoint failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()


async def start_endpoint(addr: str, metrics: ServerMetrics) -> MetricsEndpoint | None:
    """Serves ``metrics`` on ``addr``; None (and no port) when ``addr`` is empty."""
    if not addr:
        return None
    return await MetricsEndpoint.start(addr, metrics.registry)
