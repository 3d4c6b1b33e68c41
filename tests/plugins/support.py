"""Shared by the bundled plugins' tests: loading a plugin's module, installing its package
through the API, a TCP proxy that plays a broker outage, and the broker reachability check."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import socket
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.fernet import Fernet

from listener.v1 import event_pb2, event_service_pb2, listener_instance_pb2, plugin_pb2
from listener_common import events, params
from listener_common.package import build_package
from tests.support.samples import PAYLOAD_FIELDS, event_type, sample_event
from tests.support.servers import Clients, eventually

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"
#: Retries come fast so that an outage heals within a second of the destination's return.
#: Both in-process servers get one secret_key: they keep separate data dirs, and password
#: params stored encrypted by the API server must be readable by the alert server.
FAST_RETRY: dict[str, Any] = {
    "retry_base": 0.1,
    "retry_max": 0.5,
    "poll_interval": 0.5,
    "secret_key": Fernet.generate_key().decode(),
}
ALL_TYPES = [event_type(name.upper()) for name in PAYLOAD_FIELDS]
STATE = listener_instance_pb2.ListenerInstance.State


def load_module(name: str) -> ModuleType:
    """The plugin's entry module, imported from its source folder (no ``__pycache__`` left)."""
    manifest = tomllib.loads((PLUGINS / name / "listener-plugin.toml").read_text())
    module_name = manifest["entry"].partition(":")[0]
    spec = importlib.util.spec_from_file_location(
        f"{module_name}_under_test", PLUGINS / name / f"{module_name}.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return module


def typed(plugin_cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """What ``open`` receives for these instance params (validated as the API server would)."""
    form = params.form_json(plugin_cls)
    return params.typed_config(form, {key: str(value) for key, value in values.items()})


def make_event(n: int, event_type_name: str = "TASK_FAIL", **payload: Any) -> events.ListenerEvent:
    """An SDK event as the alert server hands it over."""
    body = {"task_name": f"task-{n}", "task_instance_id": str(70000 + n), **payload}
    return events.from_dict(
        {
            "id": f"ev-{n}",
            "sequence": n,
            "type": event_type_name,
            "event_time": "2024-01-02T03:04:05.123Z",
            "source": "master-1",
            "payload": body,
        }
    )


def package(name: str, out_dir: Path, version: str | None = None) -> bytes:
    """The plugin's zip built from ``plugins/<name>``; ``version`` rebuilds it as another one."""
    src = PLUGINS / name
    if version is not None:
        copy = out_dir / f"src-{name}-{version}"
        shutil.copytree(src, copy, ignore=shutil.ignore_patterns("__pycache__"))
        manifest = copy / "listener-plugin.toml"
        lines = manifest.read_text().splitlines()
        manifest.write_text(
            "\n".join(f'version = "{version}"' if x.startswith("version") else x for x in lines)
            + "\n"
        )
        src = copy
    return build_package(src, out_dir / "zips").read_bytes()


async def install(clients: Clients, name: str, out_dir: Path) -> plugin_pb2.Plugin:
    reply: plugin_pb2.Plugin = await clients.plugins.CreatePlugin(
        plugin_pb2.CreatePluginRequest(package=package(name, out_dir))
    )
    return reply


async def create_instance(
    clients: Clients,
    instance_id: str,
    plugin: str,
    values: dict[str, str],
    types: Sequence[int] = ALL_TYPES,
) -> listener_instance_pb2.ListenerInstance:
    reply: listener_instance_pb2.ListenerInstance = await clients.instances.CreateListenerInstance(
        listener_instance_pb2.CreateListenerInstanceRequest(
            listener_instance_id=instance_id,
            listener_instance=listener_instance_pb2.ListenerInstance(
                plugin=f"plugins/{plugin}",
                params=values,
                event_types=[event_pb2.EventType.ValueType(t) for t in types],
            ),
        )
    )
    return reply


async def get_instance(
    clients: Clients, instance_id: str
) -> listener_instance_pb2.ListenerInstance:
    reply: listener_instance_pb2.ListenerInstance = await clients.instances.GetListenerInstance(
        listener_instance_pb2.GetListenerInstanceRequest(name=f"listenerInstances/{instance_id}")
    )
    return reply


def run_events(first: int, count: int) -> list[event_pb2.ListenerEvent]:
    """Published events of mixed types (task and workflow runs, a definition change)."""
    kinds = ["task_start", "task_fail", "workflow_end", "workflow_added", "server_down"]
    return [sample_event(kinds[n % len(kinds)], n) for n in range(first, first + count)]


async def publish(clients: Clients, batch: list[event_pb2.ListenerEvent]) -> list[str]:
    """Publishes a batch; returns the ids the API server gave its events, in order."""
    reply = await clients.events.PublishEvents(event_service_pb2.PublishEventsRequest(events=batch))
    return [e.id for e in reply.events]


async def wait_blocked(
    clients: Clients, instance_id: str, *needles: str, timeout: float = 60.0
) -> listener_instance_pb2.ListenerInstance:
    """Waits until the instance is BLOCKED with an error that mentions every needle."""

    async def blocked() -> listener_instance_pb2.ListenerInstance | None:
        got = await get_instance(clients, instance_id)
        error = got.delivery.last_error
        if got.state == STATE.STATE_BLOCKED and all(n in error for n in needles):
            return got
        return None

    try:
        return await eventually(blocked, timeout=timeout, interval=0.1)  # type: ignore[no-any-return]
    except AssertionError:
        got = await get_instance(clients, instance_id)
        raise AssertionError(
            f"instance {instance_id} not blocked with {needles}: state {got.state}, "
            f"last_error {got.delivery.last_error!r}"
        ) from None


async def wait_caught_up(
    clients: Clients, instance_id: str, timeout: float = 60.0
) -> listener_instance_pb2.ListenerInstance:
    async def caught_up() -> listener_instance_pb2.ListenerInstance | None:
        got = await get_instance(clients, instance_id)
        ok = got.state == STATE.STATE_ACTIVE and got.delivery.pending_count == 0
        return got if ok and not got.delivery.last_error else None

    return await eventually(caught_up, timeout=timeout, interval=0.1)  # type: ignore[no-any-return]


def require_service(what: str, host: str, port: int, start: str) -> None:
    """Fails (never skips) when a server this machine should run is not listening."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        pytest.fail(
            f"{what} is needed at {host}:{port} and is not reachable ({exc}). Start it: {start}"
        )


class TcpProxy:
    """A TCP relay to a real broker that a test can take down and bring back on the same port.

    ``stop`` refuses new connections and cuts the open ones, as a broker that went away;
    ``swallow_replies`` keeps forwarding requests but drops everything the broker answers, as a
    network that loses acknowledgements.
    """

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self.accepted = 0
        self.swallow_replies = False
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    @property
    def open_links(self) -> int:
        return len(self._links)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.cut()
        if server is not None:
            await server.wait_closed()

    def cut(self) -> None:
        for client, upstream in list(self._links):
            client.transport.abort()
            upstream.transport.abort()
        self._links.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, replies=False),
                self._pipe(up_reader, writer, replies=True),
            )
        finally:
            self._links.discard(link)
            writer.transport.abort()
            up_writer.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if replies and self.swallow_replies:
                    continue
                writer.write(data)
                await writer.drain()
        writer.transport.abort()  # one side gone: the link is over, as a broker sees it
