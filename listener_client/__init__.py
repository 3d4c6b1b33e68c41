"""listener_client: a typed async Python client of the listener.v1 gRPC API.

async with ListenerClient("127.0.0.1:50051", token=...) as client:
    await client.install_plugin("dist/plugins/logger-1.0.0.zip")
    await client.create_instance("audit", "logger", event_types=["TASK_FAIL"],
                                 params={"logFile": "/tmp/audit.jsonl"})
    await client.publish({"task_fail": {"project_name": "etl", "task_name": "extract"}})
"""

from listener_client.client import (
    EVENT_TYPE_NAMES,
    SERVICE_CONFIG,
    ListenerClient,
    Progress,
    event_type,
    to_event,
    type_name,
)
from listener_client.errors import ListenerClientError

__all__ = [
    "EVENT_TYPE_NAMES",
    "SERVICE_CONFIG",
    "ListenerClient",
    "ListenerClientError",
    "Progress",
    "event_type",
    "to_event",
    "type_name",
]
