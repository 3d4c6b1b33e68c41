"""Assembles and runs the public API server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from api_server.alert_fleet import AlertFleet
from api_server.event_service import EventService
from api_server.instance_service import ListenerInstanceService
from api_server.plugin_service import PluginService
from event_store.store import Store
from listener.v1 import (
    event_service_pb2,
    event_service_pb2_grpc,
    listener_instance_pb2,
    listener_instance_pb2_grpc,
    plugin_pb2,
    plugin_pb2_grpc,
)
from listener_core import server as grpc_server
from listener_core.config import Config, load_config

log = logging.getLogger(__name__)

SERVICE_NAMES = [
    plugin_pb2.DESCRIPTOR.services_by_name["PluginService"].full_name,
    listener_instance_pb2.DESCRIPTOR.services_by_name["ListenerInstanceService"].full_name,
    event_service_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
]


@dataclass
class ApiServer:
    config: Config
    store: Store
    fleet: AlertFleet
    server: grpc.aio.Server
    port: int

    async def stop(self, grace: float = 5.0) -> None:
        await self.server.stop(grace)
        await self.fleet.close()
        await self.store.close()


async def start(config: Config) -> ApiServer:
    store = await Store.open(config.database_url)
    fleet = AlertFleet(
        config.alert_target_list,
        timeout=config.alert_timeout,
        max_message_bytes=config.max_message_bytes,
    )
    server = grpc_server.create_server(max_message_bytes=config.max_message_bytes)
    plugin_pb2_grpc.add_PluginServiceServicer_to_server(PluginService(store, fleet, config), server)
    listener_instance_pb2_grpc.add_ListenerInstanceServiceServicer_to_server(
        ListenerInstanceService(store, fleet), server
    )
    event_service_pb2_grpc.add_EventServiceServicer_to_server(
        EventService(store, fleet, config), server
    )
    grpc_server.add_health_and_reflection(server, SERVICE_NAMES)
    port = grpc_server.bind(server, config.api_addr)
    await server.start()
    log.info(
        "API server listening on %s (store %s, alert servers %s)",
        config.api_addr,
        store.backend,
        ", ".join(config.alert_target_list),
    )
    return ApiServer(config, store, fleet, server, port)


async def serve(config: Config) -> None:
    api = await start(config)
    await grpc_server.wait_for_signal()
    log.info("API server shutting down")
    await api.stop()


def main(argv: Sequence[str] | None = None) -> None:
    args = grpc_server.parse_args(argv, "api_server")
    config = load_config(args.config)
    grpc_server.configure_logging(config.log_level)
    asyncio.run(serve(config))
