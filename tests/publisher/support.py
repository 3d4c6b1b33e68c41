"""Pieces of the publisher tests: numbered events, a call-recording interceptor, the logger."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from listener.v1 import event_pb2, event_service_pb2
from listener_client import ListenerClient
from tests.support.samples import logger_package


def numbered(n: int, source: str = "master-1:5678") -> event_pb2.ListenerEvent:
    """A TASK_FAIL event that carries its publish index as task_instance_id."""
    return event_pb2.ListenerEvent(
        source=source,
        task_fail=event_pb2.TaskRun(
            project_name="etl", task_name=f"t{n}", task_instance_id=n, workflow_instance_id=1
        ),
    )


class Recorder(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Records each PublishEvents call's (request_id, event count); ``lose`` calls get their
    reply dropped after the server answered (``on_lost`` runs first), as a connection cut
    between the commit and the reply would."""

    def __init__(self, lose: int = 0, on_lost: Callable[[], Awaitable[None]] | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.lost: list[event_service_pb2.PublishEventsResponse] = []
        self.lose = lose
        self.on_lost = on_lost

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        if isinstance(request, event_service_pb2.PublishEventsRequest):
            self.calls.append((request.request_id, len(request.events)))
        call = await continuation(client_call_details, request)
        if self.lose and isinstance(request, event_service_pb2.PublishEventsRequest):
            reply = await call  # raises as the real call does when the server refused it
            self.lose -= 1
            self.lost.append(reply)
            if self.on_lost is not None:
                await self.on_lost()
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details="reply lost on the way back (test)",
            )
        return call


async def add_logger(addr: str, out: Path, instance: str = "audit") -> None:
    """Installs the logger plugin and an instance writing every TASK_FAIL to ``out``."""
    async with ListenerClient(addr, timeout=60) as client:
        await client.install_plugin(logger_package())
        await client.create_instance(
            instance, "logger", event_types=["TASK_FAIL"], params={"logFile": str(out)}
        )


def logged(out: Path) -> list[dict[str, Any]]:
    """The logger's lines so far (a partly written last line is left for later)."""
    if not out.exists():
        return []
    lines = out.read_text().split("\n")[:-1]
    return [json.loads(line) for line in lines]
