"""listener_client: a typed async Python client of the listener.v1 gRPC API.

async with ListenerClient("127.0.0.1:50051", token=...) as client:
    await client.install_plugin("dist/plugins/logger-1.0.0.zip")
    await client.create_instance("audit", "logger", event_types=["TASK_FAIL"],
                                 params={"logFile": "/tmp/audit.jsonl"})
    await client.publish({"task_fail": {"project_name": "etl", "task_name": "extract"}})

Schedulers publish through ``Publisher`` (asyncio) or ``SyncPublisher`` (a thread of its own):
batched, retried with the batch's request_id, bounded (docs/schedulers.md).
"""

from listener_client.channels import SERVICE_CONFIG
from listener_client.client import ListenerClient
from listener_client.errors import BufferFullError, ListenerClientError, PublisherClosedError
from listener_client.publisher import Publisher
from listener_client.publisher_sync import SyncPublisher
from listener_client.publishing import PublisherStats, PublishResult, RetryPolicy
from listener_client.values import EVENT_TYPE_NAMES, Progress, event_type, to_event, type_name

__all__ = [
    "EVENT_TYPE_NAMES",
    "SERVICE_CONFIG",
    "BufferFullError",
    "ListenerClient",
    "ListenerClientError",
    "Progress",
    "PublishResult",
    "Publisher",
    "PublisherClosedError",
    "PublisherStats",
    "RetryPolicy",
    "SyncPublisher",
    "event_type",
    "to_event",
    "type_name",
]
