"""A bare grpc.aio server answering canned replies: the transport's ceiling on this machine.

Same server options and event loop as the real servers, no interceptors, no parsing, no
store: what is left is gRPC plus the event loop, so a real server's rate divided by this one
says how much of the machine its own work costs. ``python -m bench.echo PORT`` prints
``ready`` once serving.
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

import grpc

from listener.v1 import event_service_pb2
from listener_core.server import run
from listener_core.settings import RuntimeSettings

SINGLE = "/bench.Echo/Single"
BATCH = "/bench.Echo/Batch"


def replies(batch_size: int) -> dict[str, bytes]:
    """Replies the size of the real ones (an id and a sequence per event)."""

    def one(seq: int) -> event_service_pb2.PublishEventResponse:
        return event_service_pb2.PublishEventResponse(id=str(uuid.uuid4()), sequence=seq)

    return {
        SINGLE: one(1_000_000).SerializeToString(),
        BATCH: event_service_pb2.PublishEventsResponse(
            events=[one(1_000_000 + i) for i in range(batch_size)]
        ).SerializeToString(),
    }


class _Echo(grpc.GenericRpcHandler):
    def __init__(self, canned: dict[str, bytes]) -> None:
        self.handlers = {
            method: grpc.unary_unary_rpc_method_handler(self._answer(reply))
            for method, reply in canned.items()
        }

    @staticmethod
    def _answer(reply: bytes) -> Any:
        async def answer(request: bytes, context: Any) -> bytes:
            return reply

        return answer

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self.handlers.get(handler_call_details.method)


async def serve(port: int, batch_size: int) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 64 * 2**20),
            ("grpc.max_send_message_length", 64 * 2**20),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers([_Echo(replies(batch_size))])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def event_loop() -> str:
    """The servers' event loop, as the bench starts them (``LISTENER_EVENT_LOOP`` or the
    default): the echo server runs on the same one, so a ratio to it leaves the loop out."""
    return os.environ.get("LISTENER_EVENT_LOOP") or RuntimeSettings().event_loop


if __name__ == "__main__":
    port, size = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 500
    run(serve(port, size), event_loop())
