"""Assembles and runs the alert server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import grpc

from alert_server import sandbox
from alert_server.child_process import ProcessSettings
from alert_server.host import PluginHost
from alert_server.servicer import PluginHostServicer, store_refusal
from alert_server.wakeup import SequenceSignal, listen_postgres, poll_forever
from event_store import events, retention
from event_store.ping import ping
from event_store.store import Store
from listener.alert.v1 import plugin_host_pb2, plugin_host_pb2_grpc
from listener_core import auth, tls
from listener_core import server as grpc_server
from listener_core.config import Config, ConfigError, load_config
from listener_core.health import HealthReporter
from listener_core.metrics import AlertMetrics, InstanceSample, MetricsEndpoint, start_endpoint
from listener_core.pipeline.authentication import Authentication
from listener_core.secrets import SecretBox
from listener_core.settings import ProcessConfig
from listener_core.tracing import Tracing

log = logging.getLogger(__name__)

SERVICE_NAME = plugin_host_pb2.DESCRIPTOR.services_by_name["PluginHostService"].full_name


@dataclass
class AlertServer:
    config: Config
    store: Store
    host: PluginHost
    server: grpc.aio.Server
    port: int
    _tasks: list[asyncio.Task[None]]
    metrics: AlertMetrics | None = None
    metrics_endpoint: MetricsEndpoint | None = None
    health: HealthReporter | None = None
    tracing: Tracing | None = None
    servicer: PluginHostServicer | None = None

    async def stop(self, grace: float = 5.0) -> None:
        if self.health is not None:
            await self.health.drain()
            await self.health.close()
        if self.metrics_endpoint is not None:
            await self.metrics_endpoint.close()
        if self.servicer is not None:
            self.servicer.end_streams()
        await self.server.stop(grace)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):  # hand the instances over at once
            await self.host.leave()
        await self.host.close()
        await self.store.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # flushes: blocking I/O


async def start(config: Config, tracing: Tracing | None = None) -> AlertServer:
    """Checks the security settings, opens the store, converges to it, and serves; returns
    once ready. Configuration mistakes raise ConfigError before anything is opened.
    ``tracing`` replaces the one the configuration asks for (tests export spans to memory);
    the server shuts it down."""
    security = config.security
    internal = (
        auth.TokenTable([(auth.INTERNAL, auth.token_digest(security.internal_token))])
        if security.internal_token
        else auth.TokenTable()
    )
    alert_addr = config.listen.alert_addr
    grpc_server.check_exposure(
        alert_addr,
        # A client certificate signed by tls_client_ca authenticates the API server too.
        authenticated=bool(internal) or bool(config.tls.client_ca),
        insecure=security.insecure,
        what="the alert server",
    )
    credentials = tls.server_credentials(config.tls)
    if security.internal_token:
        grpc_server.warn_plaintext_internal_token(
            [alert_addr], tls=credentials is not None, what="alert_addr"
        )
    secret_box = SecretBox.from_config(config)
    grpc_server.check_data_dir(config.store.data_dir, config.store.database_url)
    # The table keeps the internal token's digest; the config keeps no clear secret.
    config = dataclasses.replace(config, security=dataclasses.replace(security, internal_token=""))
    process = await asyncio.to_thread(process_settings, config.process)
    store = await Store.open(config.store.database_url)
    async with store.reader() as session:
        signal = SequenceSignal(await events.max_sequence(session))
    metrics = AlertMetrics()
    tracing = tracing or Tracing.from_settings(config.tracing, "listener-alert-server")
    server = grpc_server.create_server(
        max_message_bytes=config.alert_message_bytes,
        max_concurrent_rpcs=config.limits.max_concurrent_rpcs,
        max_streams_per_connection=config.limits.max_streams_per_connection,
        stream_window_bytes=config.limits.stream_window_bytes,
        metrics=metrics,
        stages=[Authentication(internal, auth.INTERNAL_METHOD_ROLES, superuser=None)],
        refusals=store_refusal,
    )
    # Bound before the host is built: its id and advertised address need the port.
    port = grpc_server.bind(server, alert_addr, credentials)
    host = PluginHost(
        store,
        Path(config.store.data_dir) / "packages",
        signal,
        config.delivery,
        # Stable across restarts on the same address: a restarted server takes its own
        # instances back at once instead of waiting for their leases to lapse.
        server_id=config.leases.server_id or f"{socket.gethostname()}:{port}",
        address=advertised_address(alert_addr, port, config.listen.alert_advertise_addr),
        leases=config.leases,
        process=process,
        packages=config.packages,
        metrics=metrics,
        secrets=secret_box,
        tracing=tracing,
    )
    metrics.watch_instances(
        lambda: [
            InstanceSample(v.instance_id, v.state, max(0, signal.latest - v.cursor), v.attempts)
            for v in host.instance_views()
        ]
    )
    servicer = PluginHostServicer(host, signal, metrics.notify_stream_messages.inc)
    plugin_host_pb2_grpc.add_PluginHostServiceServicer_to_server(servicer, server)
    health_servicer = await grpc_server.add_health_and_reflection(server, [SERVICE_NAME])
    # Everything alive now lives as long as the server. Frozen out of the collector's sight,
    # it is not scanned again: a full collection (the leak watch runs one after a plugin
    # version is unloaded, and installing one unloads the probed copy) then looks only at
    # what came later, and no longer stalls every delivery for ~65 ms (~100k objects).
    # Before the plugins load, so an unloaded version stays collectable.
    grpc_server.freeze_start_up_heap()
    await host.reconcile()
    grpc_server.collect_start_up_garbage()
    await server.start()
    endpoint = await start_endpoint(config.listen.alert_metrics_addr, metrics)
    retention = config.retention
    tasks = [
        asyncio.create_task(poll_forever(signal, store, config.delivery.poll_interval)),
        asyncio.create_task(host.run_leases()),
        asyncio.create_task(purge_forever(store, retention.seconds, retention.purge_interval)),
    ]
    if store.backend == "postgresql":
        tasks.append(asyncio.create_task(listen_postgres(signal, store)))
    log.info(
        "alert server %s listening on %s (store %s; event loop %s)",
        host.server_id,
        host.address,
        store.backend,
        grpc_server.loop_name(),
    )
    alert = AlertServer(config, store, host, server, port, tasks, metrics, endpoint)
    alert.tracing = tracing
    alert.servicer = servicer
    alert.health = HealthReporter(health_servicer, [SERVICE_NAME], partial(ping, store))
    alert.health.start()
    return alert


#: Listen hosts that mean "every interface": no one can call them, so the host name stands in.
_WILDCARDS = {"", "0.0.0.0", "[::]", "::"}


def advertised_address(listen_addr: str, port: int, advertise: str = "") -> str:
    """What API servers are told to call (recorded with each heartbeat): ``advertise`` when
    set, else the listen address with its bound port, this host's name replacing a wildcard
    host (in a container, the name its peers resolve)."""
    if advertise:
        return advertise
    host = listen_addr.rpartition(":")[0]
    if host in _WILDCARDS:
        host = socket.gethostname()
    return f"{host}:{port}"


def process_settings(config: ProcessConfig) -> ProcessSettings:
    """The children's limits and sandbox, the configured user resolved; raises ConfigError
    for a process_user that cannot be used. Logs which sandbox layers are in effect."""
    python = ProcessSettings.python
    try:
        user, how = sandbox.choose_user(config.user, python)
    except ValueError as exc:
        raise ConfigError(f"config process_user: {exc}") from None
    confined = config.sandbox and sandbox.landlock_abi() > 0
    log.info(
        "process-isolated plugins run %s, with a scrubbed environment%s",
        how,
        ", reads confined (Landlock)"
        if confined
        else (" (process_sandbox off)" if not config.sandbox else ", no Landlock here"),
    )
    return ProcessSettings(
        memory_mb=config.memory_mb,
        max_files=config.max_files,
        call_timeout=config.call_timeout,
        sandbox=config.sandbox,
        read_paths=config.read_paths,
        user=user,
    )


async def purge_forever(store: Store, retention_seconds: float, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            purged = await retention.purge(store, retention_seconds)
            if purged:
                log.info("purged %d delivered events", purged)
        except Exception as exc:
            log.warning("purging delivered events failed: %s", exc)


async def serve(config: Config) -> None:
    alert = await start(config)
    await grpc_server.wait_for_signal()
    log.info("alert server draining for %.1f s, then shutting down", config.listen.drain_seconds)
    if alert.health is not None:
        await alert.health.drain()
    await asyncio.sleep(config.listen.drain_seconds)
    await alert.stop()


def main(argv: Sequence[str] | None = None) -> None:
    args = grpc_server.parse_args(argv, "alert_server")
    try:
        config = load_config(args.config, insecure=args.insecure)
        grpc_server.forget_secret_variables()
        grpc_server.configure_logging(config.logging.level, config.logging.format)
        # start() freezes the start-up heap, before plugins load
        grpc_server.run(serve(config), config.runtime.event_loop)
    except ConfigError as exc:
        sys.exit(f"alert_server: {exc}")
