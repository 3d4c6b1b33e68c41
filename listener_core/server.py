"""gRPC server bootstrap shared by both servers: health, reflection, limits, shutdown."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import signal
from collections.abc import Coroutine, Iterable, MutableMapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from listener_core import logs
from listener_core.config import ConfigError
from listener_core.metrics import ServerMetrics
from listener_core.pipeline import Pipeline
from listener_core.pipeline.error_status import ErrorStatus, Refusals
from listener_core.pipeline.observability import Observability
from listener_core.pipeline.stage import Gate, Layer

log = logging.getLogger(__name__)

#: Largest message a server sends (replies); it is not a caller's to choose.
MAX_SEND_BYTES = 64 * 2**20

# grpcio ships no type information: a servicer method's context is typed as Any.
Context: TypeAlias = Any


def build_pipeline(
    stages: Sequence[Layer | Gate] = (),
    metrics: ServerMetrics | None = None,
    refusals: Refusals | None = None,
) -> Pipeline:
    """``metrics`` puts the RPC metrics and audit stage outermost, so it sees every call's
    final status; ``refusals`` gives the error stage the server's own errors."""
    observe = [Observability(metrics)] if metrics is not None else []
    return Pipeline([*observe, ErrorStatus(refusals), *stages])


#: The health service name that only says the process is alive (Kubernetes liveness probes).
LIVENESS = "liveness"


def create_server(
    *,
    max_message_bytes: int,
    stages: Sequence[Layer | Gate] = (),
    metrics: ServerMetrics | None = None,
    pipeline: Pipeline | None = None,
    max_concurrent_rpcs: int = 0,
    max_streams_per_connection: int = 0,
    stream_window_bytes: int = 0,
    outer: Sequence[grpc.aio.ServerInterceptor] = (),
    refusals: Refusals | None = None,
    reuse_port: bool = False,
) -> grpc.aio.Server:
    """Serves through ``pipeline`` when given (to share it with the HTTP gateway), else
    through ``build_pipeline(stages, metrics, refusals)``; ``outer`` interceptors run around it
    (the tracing one, ``listener_core.tracing``, when traces are on).

    What one caller can make the server hold is bounded four ways: a request above
    ``max_message_bytes`` is refused before it is parsed; a connection may carry at most
    ``max_streams_per_connection`` calls at once (HTTP/2 MAX_CONCURRENT_STREAMS: the client
    queues the rest); the server runs at most ``max_concurrent_rpcs`` calls at once (more
    get RESOURCE_EXHAUSTED at once); and a call may send at most ``stream_window_bytes``
    ahead of the server reading it (a fixed HTTP/2 stream window). A refused call's request
    is never read at all (``listener_core.pipeline.error_status.rejecting_handler``); gRPC's
    own window tuning (BDP probing) would grow the windows of those very calls while they
    wait for their refusal, to hundreds of MB across a connection's streams. 0 leaves a
    limit off (for the window: gRPC's tuning). grpcio offers no memory quota to Python (its
    ``grpc.resource_quota`` argument is a C pointer).
    ``reuse_port`` lets processes that all ask for it share the address (``api_workers``);
    otherwise a taken address is an error."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        # What the server sends (pages of events, packages to alert servers) is its own
        # doing, so not held to the receive limit.
        ("grpc.max_send_message_length", max(max_message_bytes, MAX_SEND_BYTES)),
        ("grpc.so_reuseport", int(reuse_port)),
    ]
    if stream_window_bytes > 0:
        options += [
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", stream_window_bytes),
        ]
    if max_streams_per_connection > 0:
        options.append(("grpc.max_concurrent_streams", max_streams_per_connection))
    return grpc.aio.server(
        interceptors=[*outer, pipeline or build_pipeline(stages, metrics, refusals)],
        options=options,
        maximum_concurrent_rpcs=max_concurrent_rpcs or None,
    )


async def add_health_and_reflection(
    server: grpc.aio.Server, service_names: Iterable[str]
) -> health.aio.HealthServicer:
    """Serves grpc.health.v1 (all listed services SERVING until ``listener_core.health``
    says otherwise) and server reflection."""
    names = list(service_names)
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ["", *names]:
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    # For liveness probes: SERVING while the process answers at all, whatever the store does
    # (restarting every pod would not bring a database back).
    await servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    return servicer


def bind(
    server: grpc.aio.Server, addr: str, credentials: grpc.ServerCredentials | None = None
) -> int:
    """Binds a TLS port when ``credentials`` are given, else a plaintext one; raises if the
    address is taken (no silent port 0)."""
    if credentials is not None:
        port = int(server.add_secure_port(addr, credentials))
    else:
        port = int(server.add_insecure_port(addr))
    if port == 0:
        raise OSError(f"cannot listen on {addr}")
    return port


def is_loopback(addr: str) -> bool:
    """Whether ``addr`` (``host:port``, ``[v6]:port`` or ``unix:path``) is reachable only from
    this machine. Names other than ``localhost`` count as not loopback: they may resolve to
    anything."""
    if addr.startswith(("unix:", "unix-abstract:")):
        return True
    host = addr.rsplit(":", 1)[0] if ":" in addr else addr
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(addr: str, *, authenticated: bool, insecure: bool, what: str) -> None:
    """Refuses to serve an unauthenticated API on a non-loopback address unless told to.

    Open is the right default on loopback (development, tests, a sidecar); elsewhere it means
    anyone on the network can install code into the alert server, so it takes ``--insecure``.
    """
    if authenticated or is_loopback(addr):
        return
    if insecure:
        log.warning("%s on %s accepts calls from anyone (--insecure)", what, addr)
        return
    raise ConfigError(
        f"{what} would listen on {addr} without authentication: configure tokens "
        "(see SECURITY.md), bind to a loopback address, or pass --insecure "
        "(LISTENER_INSECURE=true) on a network you trust"
    )


def freeze_start_up_heap() -> None:
    """Moves what start-up built (modules, protobuf descriptors, SQLAlchemy tables: some
    110,000 objects) out of the garbage collector's reach. A full collection walked all
    of them, a 55-60 ms stall of the event loop on an idle box (hundreds under load) that
    set the latency tail (BENCHMARKS.md, round three). Called once per server start before
    any plugin loads (the API server's ``main``, the alert server's ``start``, which covers
    in-process servers too): frozen objects are never freed, and an unloaded plugin must be."""
    gc.collect()
    gc.freeze()


def collect_start_up_garbage() -> None:
    """One full collection once the server has started its work (the alert server: every
    instance's runner), before it serves. What that start built is tens of thousands of
    objects per thousand instances, all new to the collector: left to it, the first
    automatic full collection came some 10 s after start and held the event loop for
    160 ms with 10,000 instances. Collected here, they count as the old heap, and the next
    full pass waits until a quarter as much again has survived."""
    gc.collect()


def run(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    """Runs a server's ``main`` to the end on the configured event loop (``event_loop``:
    ``uvloop`` or ``asyncio``), as ``asyncio.run`` does: the loop's tasks are cancelled and
    its async generators closed at the end."""
    factory = None
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError as exc:
            main.close()  # never to run: no "never awaited" warning beside the message
            raise ConfigError(
                f"event_loop = 'uvloop': uvloop cannot be imported ({exc}); install it, "
                "or set event_loop = 'asyncio'"
            ) from None
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def loop_name() -> str:
    """The running event loop's implementation, for the start-up log: ``uvloop`` or
    ``asyncio`` (what runs, which in-process servers take from their host)."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


async def wait_for_signal() -> None:
    """Returns on SIGTERM or SIGINT, so the caller can shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)


#: Environment variables holding secrets: read once by ``load_config``, then removed.
SECRET_VARIABLES = ("LISTENER_TOKENS", "LISTENER_INTERNAL_TOKEN", "LISTENER_SECRET_KEY")


def forget_secret_variables(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Removes the secret ``LISTENER_*`` variables from the environment once the config holds
    them (as digests, for tokens), so no child process or library inherits or reads them.

    Only ``os.environ`` changes: ``/proc/<pid>/environ`` keeps showing the environment the
    process started with (SECURITY.md)."""
    environ = os.environ if environ is None else environ
    return [name for name in SECRET_VARIABLES if environ.pop(name, None) is not None]


def warn_plaintext_internal_token(where: Iterable[str], *, tls: bool, what: str) -> None:
    """The internal token is worth code execution on an alert server: say so when it would
    cross a non-loopback network in clear."""
    exposed = [addr for addr in where if not is_loopback(addr)]
    if exposed and not tls:
        log.warning(
            "the internal token crosses the network in clear (%s: %s): it lets anyone who sees "
            "it load code into the alert servers; configure TLS (SECURITY.md)",
            what,
            ", ".join(exposed),
        )


def check_data_dir(data_dir: str, database_url: str) -> None:
    """Warns when the data directory or the SQLite database is open to other users."""
    paths = [Path(data_dir)]
    prefix = "sqlite+aiosqlite:///"
    if database_url.startswith(prefix):
        paths.append(Path(database_url.removeprefix(prefix)))
    for path in paths:
        try:
            mode = path.stat().st_mode
            # A file in a directory others cannot enter is out of their reach, whatever its own
            # mode: SQLite creates its files with the umask's 644 inside make run's 700 data/.
            if path.is_file() and not path.parent.stat().st_mode & 0o001:
                continue
        except OSError:
            continue
        if mode & 0o007:
            log.warning(
                "%s is accessible to other users (mode %o): it holds the store and the secret "
                "key; chmod 700 it (or o-rwx)",
                path,
                mode & 0o777,
            )


def configure_logging(level: str, fmt: str = "text") -> None:
    """Logs to stderr as text lines or JSON objects (``log_format``)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), handlers=[logs.handler(fmt)]
    )
    logs.quiet_libraries()


def parse_args(argv: Sequence[str] | None, prog: str) -> Any:
    import argparse

    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--config", help="TOML config file (LISTENER_* variables override it)")
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="serve without authentication on a non-loopback address (trusted networks only)",
    )
    return parser.parse_args(argv)
