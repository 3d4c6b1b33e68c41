"""Assembles and runs the public API server."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import grpc

from api_server import refusals, validation, workers
from api_server.alert_fleet import AlertFleet
from api_server.caller_service import CallerService
from api_server.discovery import Discovery
from api_server.event_service import EventService
from api_server.http import gateway as http_gateway
from api_server.http.call_context import HandlerTable
from api_server.instance_service import ListenerInstanceService
from api_server.limits import PublishLimiter
from api_server.plugin_service import PluginService
from event_store.ping import ping
from event_store.store import Store
from listener.v1 import (
    caller_pb2,
    caller_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    listener_instance_pb2,
    listener_instance_pb2_grpc,
    plugin_pb2,
    plugin_pb2_grpc,
)
from listener_core import auth, tls
from listener_core import server as grpc_server
from listener_core.config import Config, ConfigError, load_config
from listener_core.health import HealthReporter
from listener_core.metrics import ApiMetrics, MetricsEndpoint, start_endpoint
from listener_core.pipeline.authentication import Authentication
from listener_core.secrets import SecretBox
from listener_core.tracing import Tracing

log = logging.getLogger(__name__)

SERVICE_NAMES = [
    plugin_pb2.DESCRIPTOR.services_by_name["PluginService"].full_name,
    listener_instance_pb2.DESCRIPTOR.services_by_name["ListenerInstanceService"].full_name,
    event_service_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    caller_pb2.DESCRIPTOR.services_by_name["CallerService"].full_name,
]


@dataclass
class ApiServer:
    config: Config
    store: Store
    fleet: AlertFleet
    server: grpc.aio.Server
    port: int
    events: EventService
    metrics: ApiMetrics | None = None
    metrics_endpoint: MetricsEndpoint | None = None
    http: http_gateway.HttpEndpoint | None = None
    health: HealthReporter | None = None
    discovery: Discovery | None = None
    tracing: Tracing | None = None

    @property
    def http_port(self) -> int:
        assert self.http is not None, "HTTP is off (http_addr = off)"
        return self.http.port

    async def stop(self, grace: float = 5.0) -> None:
        if self.health is not None:
            await self.health.drain()
            await self.health.close()
        if self.http is not None:
            await self.http.close()
        if self.metrics_endpoint is not None:
            await self.metrics_endpoint.close()
        await self.server.stop(grace)
        await self.events.committer.close()
        if self.discovery is not None:
            await self.discovery.close()
        await self.fleet.close()
        await self.store.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # flushes: blocking I/O


async def start(config: Config, tracing: Tracing | None = None) -> ApiServer:
    """Checks the security settings, opens the store, and serves; returns once ready.

    Every configuration mistake (a bad token entry, an unreadable certificate, an open API on a
    public address) raises ConfigError before anything is opened. ``tracing`` replaces the
    one the configuration asks for (tests export spans to memory); the server shuts it down.
    """
    security, api_addr, http_addr = config.security, config.listen.api_addr, config.listen.http_addr
    tokens = auth.TokenTable.parse(security.tokens)
    grpc_server.check_exposure(
        api_addr, authenticated=bool(tokens), insecure=security.insecure, what="the API server"
    )
    try:
        http_bind = http_gateway.parse_addr(http_addr)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if http_bind is not None:
        grpc_server.check_exposure(
            http_addr,
            authenticated=bool(tokens),
            insecure=security.insecure,
            what="the HTTP API",
        )
    credentials = tls.server_credentials(config.tls)
    http_tls = http_gateway.ssl_context(config.tls.cert, config.tls.key, config.tls.client_ca)
    if tokens and credentials is None and not grpc_server.is_loopback(api_addr):
        log.warning("tokens travel in clear on %s: configure tls_cert and tls_key", api_addr)
    alert_credentials = tls.alert_channel_credentials(config.tls)
    if security.internal_token and config.fleet.alert_targets:
        grpc_server.warn_plaintext_internal_token(
            config.fleet.alert_targets, tls=alert_credentials is not None, what="alert targets"
        )
    grpc_server.check_data_dir(config.store.data_dir, config.store.database_url)
    secret_box = SecretBox.from_config(config)
    # Keep the tokens' digests only.
    config = dataclasses.replace(
        config, security=dataclasses.replace(security, tokens=tokens.redacted())
    )
    store = await Store.open(config.store.database_url)
    fleet = AlertFleet(
        config.fleet.alert_targets,
        timeout=config.fleet.alert_timeout,
        max_message_bytes=config.alert_message_bytes,
        credentials=alert_credentials,
        internal_token=security.internal_token,
        server_name=config.tls.alert_server_name,
    )
    discovery = (
        Discovery(store, fleet, config.leases.ttl) if config.discovers_alert_servers else None
    )
    if discovery is not None:
        await discovery.start()
    metrics = ApiMetrics()
    tracing = tracing or Tracing.from_settings(config.tracing, "listener-api-server")
    interceptor = tracing.server_interceptor() if tracing is not None else None
    pipeline = grpc_server.build_pipeline(
        [
            Authentication(tokens, auth.PUBLIC_METHOD_ROLES),
            validation.RequestValidator(),
            PublishLimiter(config.limits.publish_concurrency_per_caller),
        ],
        metrics,
        refusals.service_error,
    )
    server = grpc_server.create_server(
        max_message_bytes=config.limits.max_message_bytes,
        max_concurrent_rpcs=config.limits.max_concurrent_rpcs,
        max_streams_per_connection=config.limits.max_streams_per_connection,
        stream_window_bytes=config.limits.stream_window_bytes,
        pipeline=pipeline,
        outer=[interceptor] if interceptor is not None else [],
        reuse_port=config.listen.api_workers > 1,
    )
    # Registered through the table, so HTTP calls the same handlers through the same pipeline.
    table = HandlerTable(server)
    plugin_pb2_grpc.add_PluginServiceServicer_to_server(
        PluginService(store, fleet, config.packages), table
    )
    listener_instance_pb2_grpc.add_ListenerInstanceServiceServicer_to_server(
        ListenerInstanceService(store, fleet, secrets=secret_box), table
    )
    event_service = EventService(store, fleet, config.limits, metrics, tracing)
    event_service_pb2_grpc.add_EventServiceServicer_to_server(event_service, table)
    caller_pb2_grpc.add_CallerServiceServicer_to_server(CallerService(tokens), table)
    health_servicer = await grpc_server.add_health_and_reflection(server, SERVICE_NAMES)
    port = grpc_server.bind(server, api_addr, credentials)
    await server.start()
    endpoint = await start_endpoint(config.listen.api_metrics_addr, metrics)
    api = ApiServer(config, store, fleet, server, port, event_service, metrics, endpoint)
    api.discovery = discovery
    api.tracing = tracing
    api.health = HealthReporter(health_servicer, SERVICE_NAMES, partial(ping, store))
    api.health.start()
    if http_bind is not None:
        gateway = http_gateway.Gateway(
            pipeline,
            table.handlers,
            max_body_bytes=config.limits.max_message_bytes,
            max_package_bytes=config.packages.max_bytes,
            loopback_names_only=not tokens and grpc_server.is_loopback(http_addr),
            tracing=interceptor,
        )
        try:
            api.http = await http_gateway.serve(gateway, *http_bind, http_tls)
        except BaseException:
            await api.stop(0)
            raise
        log.info("HTTP/JSON and the console on %s", api.http.url)
    log.info(
        "API server listening on %s (%s, %s; store %s, alert servers %s; event loop %s)",
        api_addr,
        "TLS" if credentials is not None else "plaintext",
        f"{len(tokens)} token(s)" if tokens else "no authentication",
        store.backend,
        ", ".join(config.fleet.alert_targets) or "found in the store",
        grpc_server.loop_name(),
    )
    return api


async def serve(config: Config) -> None:
    api = await start(config)
    await grpc_server.wait_for_signal()
    log.info("API server draining for %.1f s, then shutting down", config.listen.drain_seconds)
    if api.health is not None:
        await api.health.drain()
    await asyncio.sleep(config.listen.drain_seconds)
    await api.stop()


def main(argv: Sequence[str] | None = None) -> None:
    args = grpc_server.parse_args(argv, "api_server")
    try:
        config = load_config(args.config, insecure=args.insecure)
        grpc_server.forget_secret_variables()
        grpc_server.configure_logging(config.logging.level, config.logging.format)
        grpc_server.freeze_start_up_heap()  # the process's own, before any plugin loads
        loop = config.runtime.event_loop
        if config.listen.api_workers > 1:
            sys.exit(workers.run(config, lambda c: grpc_server.run(serve(c), loop)))
        grpc_server.run(serve(config), loop)
    except (ConfigError, OSError) as exc:  # OSError: a listen address is taken
        sys.exit(f"api_server: {exc}")
