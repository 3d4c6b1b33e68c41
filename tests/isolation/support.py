"""Test plugins and steps shared by the isolation tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from listener.alert.v1 import plugin_host_pb2, plugin_host_pb2_grpc
from listener.v1 import listener_instance_pb2 as li_pb2
from listener.v1 import plugin_pb2
from tests.support.databases import sqlite_url
from tests.support.samples import event_type, make_zip, manifest
from tests.support.servers import Clients, Pair, running_pair

# Writes one line per event: its id and sequence, the version that handled it, the process
# and a monotonic timestamp. ``mode`` makes a version fail in a chosen way.
RECORDER = """
import json, os, time
from listener_common import ListenerPlugin, params

VERSION = "{version}"
MODE = "{mode}"
if MODE == "import-error":
    raise ImportError("this version cannot be imported")

class Recorder(ListenerPlugin):
    @classmethod
    def params(cls):
        return [params.Input("logFile", title="Log file", required=True)]

    async def open(self, config):
        if MODE == "open-error":
            raise ConnectionError("destination unreachable from this version")
        self.fh = open(config["logFile"], "a", buffering=1)

    async def on_event(self, event):
        self.fh.write(json.dumps({{
            "id": event.id, "seq": event.sequence, "v": VERSION, "pid": os.getpid(),
            "t": time.monotonic(),
        }}) + "\\n")

    async def close(self):
        self.fh.close()
"""


def recorder_package(
    version: str, *, mode: str = "", isolation: str = "", name: str = "recorder"
) -> bytes:
    extra = f'isolation = "{isolation}"\n' if isolation else ""
    return make_zip(
        {"recorder.py": RECORDER.format(version=version, mode=mode)},
        manifest(name, "recorder:Recorder", version, extra=extra),
    )


@asynccontextmanager
async def sqlite_pair(tmp_path: Path, **settings: Any) -> AsyncIterator[Pair]:
    async with running_pair(sqlite_url(tmp_path), tmp_path, **settings) as pair:
        yield pair


async def install(
    clients: Clients, package: bytes, plugin_id: str = "", isolation: int = 0
) -> plugin_pb2.Plugin:
    return await clients.plugins.CreatePlugin(
        plugin_pb2.CreatePluginRequest(
            plugin_id=plugin_id, package=package, plugin=plugin_pb2.Plugin(isolation=isolation)
        )
    )


async def update(clients: Clients, plugin_id: str, package: bytes) -> plugin_pb2.Plugin:
    return await clients.plugins.UpdatePlugin(
        plugin_pb2.UpdatePluginRequest(
            plugin=plugin_pb2.Plugin(name=f"plugins/{plugin_id}"), package=package
        )
    )


async def get_plugin(clients: Clients, plugin_id: str) -> plugin_pb2.Plugin:
    return await clients.plugins.GetPlugin(plugin_pb2.GetPluginRequest(name=f"plugins/{plugin_id}"))


async def create_instance(
    clients: Clients,
    instance_id: str,
    plugin_id: str,
    params: dict[str, str],
    types: tuple[str, ...] = ("TASK_FAIL",),
) -> li_pb2.ListenerInstance:
    return await clients.instances.CreateListenerInstance(
        li_pb2.CreateListenerInstanceRequest(
            listener_instance_id=instance_id,
            listener_instance=li_pb2.ListenerInstance(
                plugin=f"plugins/{plugin_id}",
                params=params,
                event_types=[event_type(t) for t in types],
            ),
        )
    )


async def get_instance(clients: Clients, instance_id: str) -> li_pb2.ListenerInstance:
    return await clients.instances.GetListenerInstance(
        li_pb2.GetListenerInstanceRequest(name=f"listenerInstances/{instance_id}")
    )


async def alert_status(pair: Pair) -> plugin_host_pb2.GetStatusResponse:
    """The alert server's GetStatus, over its internal gRPC API."""
    async with grpc.aio.insecure_channel(pair.alert_addr) as channel:
        stub = plugin_host_pb2_grpc.PluginHostServiceStub(channel)
        return await stub.GetStatus(plugin_host_pb2.GetStatusRequest())
