"""gRPC server bootstrap shared by both servers: health, reflection, limits, shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from listener_core.interceptor import ErrorInterceptor

log = logging.getLogger(__name__)

# grpcio ships no type information: a servicer method's context is typed as Any.
Context: TypeAlias = Any


def create_server(
    *, max_message_bytes: int, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
) -> grpc.aio.Server:
    return grpc.aio.server(
        interceptors=[ErrorInterceptor(), *interceptors],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )


def add_health_and_reflection(
    server: grpc.aio.Server, service_names: Iterable[str]
) -> health.HealthServicer:
    """Serves grpc.health.v1 (all listed services SERVING) and server reflection."""
    names = list(service_names)
    servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ["", *names]:
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    return servicer


def bind(server: grpc.aio.Server, addr: str) -> int:
    """Binds an insecure port; raises if the address is taken (no silent port 0)."""
    port = int(server.add_insecure_port(addr))
    if port == 0:
        raise OSError(f"cannot listen on {addr}")
    return port


async def wait_for_signal() -> None:
    """Returns on SIGTERM or SIGINT, so the caller can shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)


def set_not_serving(servicer: health.HealthServicer) -> None:
    servicer.enter_graceful_shutdown()


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def parse_args(argv: Sequence[str] | None, prog: str) -> Any:
    import argparse

    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--config", help="TOML config file (LISTENER_* variables override it)")
    return parser.parse_args(argv)
