"""The driver's own gRPC calls: admin actions on the API server, status from the alert server.

Load never goes through here (see ``bench.load``); these are the few control calls a
scenario makes around a measurement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc

from listener import event_types
from listener.alert.v1 import plugin_host_pb2, plugin_host_pb2_grpc
from listener.v1 import (
    listener_instance_pb2,
    listener_instance_pb2_grpc,
    plugin_pb2,
    plugin_pb2_grpc,
)

li = listener_instance_pb2
ALL_TYPES = [number for number in event_types.NAMES if number]
T = TypeVar("T")


async def gather_limited(calls: Iterable[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Runs the calls with at most ``limit`` in flight (creating 1,000 instances one by one
    would measure round trips, all at once would measure a stampede)."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(c) for c in calls)))


class Admin:
    def __init__(self, api_addr: str, alert_addr: str) -> None:
        options = [("grpc.max_send_message_length", 64 * 2**20)]
        self.api = grpc.aio.insecure_channel(api_addr, options=options)
        self.alert = grpc.aio.insecure_channel(alert_addr)
        self.plugins = plugin_pb2_grpc.PluginServiceStub(self.api)
        self.instances = listener_instance_pb2_grpc.ListenerInstanceServiceStub(self.api)
        self.host = plugin_host_pb2_grpc.PluginHostServiceStub(self.alert)

    async def close(self) -> None:
        await self.api.close()
        await self.alert.close()

    async def install(self, package: bytes) -> plugin_pb2.Plugin:
        return await self.plugins.CreatePlugin(  # type: ignore[no-any-return]
            plugin_pb2.CreatePluginRequest(package=package), timeout=60
        )

    async def update(self, plugin_id: str, package: bytes) -> plugin_pb2.Plugin:
        return await self.plugins.UpdatePlugin(  # type: ignore[no-any-return]
            plugin_pb2.UpdatePluginRequest(
                plugin=plugin_pb2.Plugin(name=f"plugins/{plugin_id}"), package=package
            ),
            timeout=60,
        )

    async def uninstall(self, plugin_id: str) -> None:
        await self.plugins.DeletePlugin(
            plugin_pb2.DeletePluginRequest(name=f"plugins/{plugin_id}"), timeout=60
        )

    async def create_instance(
        self,
        instance_id: str,
        plugin_id: str,
        params: dict[str, str] | None = None,
        *,
        filter: str = "",
    ) -> Any:
        return await self.instances.CreateListenerInstance(
            li.CreateListenerInstanceRequest(
                listener_instance_id=instance_id,
                listener_instance=li.ListenerInstance(
                    plugin=f"plugins/{plugin_id}",
                    params=params or {},
                    event_types=ALL_TYPES,
                    filter=filter,
                ),
            ),
            timeout=60,
        )

    async def pause(self, instance_id: str) -> None:
        await self.instances.PauseListenerInstance(
            li.PauseListenerInstanceRequest(name=f"listenerInstances/{instance_id}"), timeout=60
        )

    async def resume(self, instance_id: str) -> None:
        await self.instances.ResumeListenerInstance(
            li.ResumeListenerInstanceRequest(name=f"listenerInstances/{instance_id}"), timeout=60
        )

    async def delete_instance(self, instance_id: str) -> None:
        await self.instances.DeleteListenerInstance(
            li.DeleteListenerInstanceRequest(name=f"listenerInstances/{instance_id}"), timeout=60
        )

    async def status(self) -> plugin_host_pb2.GetStatusResponse:
        reply = await self.host.GetStatus(plugin_host_pb2.GetStatusRequest(), timeout=30)
        return reply  # type: ignore[no-any-return]

    async def wait_instances(
        self, ids: Iterable[str], state: str = "ACTIVE", timeout: float = 120
    ) -> float:
        """Waits until the alert server runs every one of ``ids`` in ``state``; returns the
        seconds waited. Raises TimeoutError with how many were there."""
        want = set(ids)
        started = time.perf_counter()
        seen = 0
        while time.perf_counter() - started < timeout:
            with_state = {
                i.instance_id for i in (await self.status()).instances if i.state == state
            }
            seen = len(want & with_state)
            if seen == len(want):
                return time.perf_counter() - started
            await asyncio.sleep(0.02)
        raise TimeoutError(f"{seen} of {len(want)} instances {state} after {timeout}s")
