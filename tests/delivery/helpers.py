"""Shared steps of the delivery tests."""

from __future__ import annotations

from pathlib import Path

from listener.v1 import listener_instance_pb2 as li_pb2
from listener.v1 import plugin_pb2
from tests.support.samples import event_type, logger_package
from tests.support.servers import Clients


async def install(clients: Clients, package: bytes) -> plugin_pb2.Plugin:
    return await clients.plugins.CreatePlugin(plugin_pb2.CreatePluginRequest(package=package))


async def create_instance(
    clients: Clients,
    instance_id: str,
    plugin: str,
    params: dict[str, str],
    types: list[str],
    policy: li_pb2.FailurePolicy | None = None,
) -> li_pb2.ListenerInstance:
    return await clients.instances.CreateListenerInstance(
        li_pb2.CreateListenerInstanceRequest(
            listener_instance_id=instance_id,
            listener_instance=li_pb2.ListenerInstance(
                plugin=plugin,
                params=params,
                event_types=[event_type(t) for t in types],
                failure_policy=policy,
            ),
        )
    )


async def logging_task_failures(clients: Clients, instance_id: str, out: Path) -> None:
    """The logger plugin installed, and an instance writing every TASK_FAIL to ``out``."""
    await install(clients, logger_package())
    params = {"logFile": str(out)}
    await create_instance(clients, instance_id, "plugins/logger", params, ["TASK_FAIL"])


async def get_instance(clients: Clients, instance_id: str) -> li_pb2.ListenerInstance:
    return await clients.instances.GetListenerInstance(
        li_pb2.GetListenerInstanceRequest(name=f"listenerInstances/{instance_id}")
    )
