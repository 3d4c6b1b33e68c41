"""The API server's Notify to alert servers: a commit's Notify goes out without waiting for
the previous one's answer (up to NOTIFIES_IN_FLIGHT unanswered), and what is committed while
every slot is busy goes out as one Notify of the newest sequence when a slot frees."""

from __future__ import annotations

import asyncio

import grpc

from api_server.alert_fleet import NOTIFIES_IN_FLIGHT, AlertFleet
from listener.alert.v1 import plugin_host_pb2 as pb
from listener.alert.v1 import plugin_host_pb2_grpc
from tests.support.servers import eventually


class HeldNotify(plugin_host_pb2_grpc.PluginHostServiceServicer):
    """An alert server whose Notify answers only once ``release`` is set."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.release = asyncio.Event()

    async def Notify(self, request: pb.NotifyRequest, context: object) -> pb.NotifyResponse:
        self.received.append(request.max_sequence)
        await self.release.wait()
        return pb.NotifyResponse()


async def test_notifies_overlap_then_coalesce_to_the_newest() -> None:
    held = HeldNotify()
    server = grpc.aio.server()
    plugin_host_pb2_grpc.add_PluginHostServiceServicer_to_server(held, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    fleet = AlertFleet([f"127.0.0.1:{port}"], timeout=30, max_message_bytes=4 << 20)
    try:
        last = NOTIFIES_IN_FLIGHT + 16
        for sequence in range(1, last + 1):
            fleet.notify(sequence)
        # The first NOTIFIES_IN_FLIGHT commits reach the server while none is answered.
        await eventually(lambda: len(held.received) >= NOTIFIES_IN_FLIGHT, timeout=30)
        assert sorted(held.received) == list(range(1, NOTIFIES_IN_FLIGHT + 1))

        held.release.set()
        await eventually(lambda: last in held.received, timeout=30)
        await eventually(lambda: not fleet.notifies_in_flight, timeout=30)
        # The rest coalesced into one Notify of the newest; none was sent twice.
        assert sorted(held.received) == [*range(1, NOTIFIES_IN_FLIGHT + 1), last]

        fleet.notify(last)  # nothing new: no call
        fleet.notify(last + 1)
        await eventually(lambda: last + 1 in held.received, timeout=30)
        assert held.received.count(last) == 1
    finally:
        await fleet.close()
        await server.stop(None)
