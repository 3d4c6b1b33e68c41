"""The API server's nudges to alert servers (``AlertFleet.notify``).

On a ``NotifyStream`` kept open: commits made while a write is pending coalesce into one
message of the newest sequence, and a stream lost with its alert server is reopened on the
next one. Without the stream (an older alert server: UNIMPLEMENTED) every nudge goes by unary
Notify: a commit's Notify goes out without waiting for the previous one's answer (up to
NOTIFIES_IN_FLIGHT unanswered), and what is committed while every slot is busy goes out as one
Notify of the newest sequence when a slot frees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from api_server.alert_fleet import NOTIFIES_IN_FLIGHT, AlertFleet
from listener.alert.v1 import plugin_host_pb2 as pb
from listener.alert.v1 import plugin_host_pb2_grpc
from tests.support.servers import eventually, free_port

SERVICE = "listener.alert.v1.PluginHostService"


class HeldNotify:
    """An older alert server: only the unary Notify, answered once ``release`` is set."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.release = asyncio.Event()

    async def Notify(self, request: pb.NotifyRequest, context: object) -> pb.NotifyResponse:
        self.received.append(request.max_sequence)
        await self.release.wait()
        return pb.NotifyResponse()

    def handler(self) -> grpc.GenericRpcHandler:
        notify = grpc.unary_unary_rpc_method_handler(
            self.Notify,
            request_deserializer=pb.NotifyRequest.FromString,
            response_serializer=pb.NotifyResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"Notify": notify})


class Nudged(plugin_host_pb2_grpc.PluginHostServiceServicer):
    """An alert server with both: records what came by stream and what by unary call."""

    def __init__(self) -> None:
        self.streamed: list[int] = []
        self.unary: list[int] = []
        self.streams = 0

    async def Notify(self, request: pb.NotifyRequest, context: object) -> pb.NotifyResponse:
        self.unary.append(request.max_sequence)
        return pb.NotifyResponse()

    async def NotifyStream(
        self, requests: AsyncIterator[pb.NotifyRequest], context: object
    ) -> pb.NotifyResponse:
        self.streams += 1
        async for request in requests:
            self.streamed.append(request.max_sequence)
        return pb.NotifyResponse()


async def serve(servicer: Nudged, addr: str) -> grpc.aio.Server:
    server = grpc.aio.server()
    plugin_host_pb2_grpc.add_PluginHostServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(addr)
    await server.start()
    return server


async def test_an_older_alert_server_gets_notifies_that_overlap_then_coalesce() -> None:
    held = HeldNotify()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((held.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    fleet = AlertFleet([f"127.0.0.1:{port}"], timeout=30, max_message_bytes=4 << 20)
    try:
        # The first nudge tries the stream; UNIMPLEMENTED sends it again by Notify.
        fleet.notify(1)
        await eventually(lambda: held.received == [1], timeout=30)
        last = NOTIFIES_IN_FLIGHT + 16
        for sequence in range(2, last + 1):
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


async def test_nudges_go_on_one_stream_and_coalesce_while_a_write_is_pending() -> None:
    nudged = Nudged()
    addr = f"127.0.0.1:{free_port()}"
    server = await serve(nudged, addr)
    fleet = AlertFleet([addr], timeout=30, max_message_bytes=4 << 20)
    try:
        for sequence in range(1, 21):  # one loop turn: the stream's writer has not run yet
            fleet.notify(sequence)
        await eventually(lambda: nudged.streamed == [20], timeout=30)
        for sequence in range(21, 31):
            fleet.notify(sequence)
            await eventually(lambda s=sequence: s in nudged.streamed, timeout=30)  # type: ignore[misc]
        assert nudged.streamed == [20, *range(21, 31)]
        assert nudged.streams == 1
        assert nudged.unary == []
        assert not fleet.notifies_in_flight
    finally:
        await fleet.close()
        await server.stop(None)


async def test_a_lost_stream_falls_back_to_notify_and_reopens_on_the_restarted_server() -> None:
    first = Nudged()
    addr = f"127.0.0.1:{free_port()}"
    server = await serve(first, addr)
    fleet = AlertFleet([addr], timeout=5, max_message_bytes=4 << 20)
    try:
        fleet.notify(1)
        await eventually(lambda: first.streamed == [1], timeout=30)
        await server.stop(None)  # the alert server goes away with the stream
        fleet.notify(2)  # to no one: the unary fallback finds nobody either
        second = Nudged()
        server = await serve(second, addr)
        sequence = 2
        # The fleet nudges on: by Notify while the stream is closed, then on a new stream.
        while not second.streamed:
            sequence += 1
            fleet.notify(sequence)
            await asyncio.sleep(0.1)
            assert sequence < 300, "the stream was not reopened within 30 s"
        assert second.streams == 1
        assert second.streamed[0] > 2
        fleet.notify(sequence + 1)
        await eventually(lambda: sequence + 1 in second.streamed, timeout=30)
        # Every nudge since the restart reached it, one way or the other.
        assert set(range(second.streamed[0], sequence + 2)) <= {*second.streamed, *second.unary}
    finally:
        await fleet.close()
        await server.stop(None)
