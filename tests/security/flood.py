"""An attacker for the memory test:
``python -m tests.security.flood ADDR METHOD SIZE CALLS CONNECTIONS``.

Sends CALLS unary calls of SIZE bytes at once to METHOD, spread over CONNECTIONS connections
(one per call: no per-connection limit helps; one for all: every stream's window counts
against one server-side connection), with a wrong token, and prints how they ended as JSON.
A subprocess, so that its own gigabytes of request buffers never count against the test.
"""

from __future__ import annotations

import asyncio
import json
import sys

import grpc


async def flood(addr: str, method: str, size: int, calls: int, connections: int) -> dict[str, int]:
    # Field 1 of the request as one length-delimited value: a well-formed message.
    payload = b"\x0a" + _varint(size) + b"x" * size
    channels = [
        grpc.aio.insecure_channel(addr, options=[("grpc.max_send_message_length", -1)])
        for _ in range(connections)
    ]

    async def one(channel: grpc.aio.Channel) -> str:
        call = channel.unary_unary(
            method, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        try:
            await call(payload, metadata=[("authorization", "Bearer wrong")], timeout=300)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
        return "OK"

    try:
        ends = await asyncio.gather(*(one(channels[i % connections]) for i in range(calls)))
    finally:
        for channel in channels:
            await channel.close()
    return {end: ends.count(end) for end in set(ends)}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


if __name__ == "__main__":
    addr, method = sys.argv[1], sys.argv[2]
    size, calls, connections = (int(arg) for arg in sys.argv[3:6])
    print(json.dumps(asyncio.run(flood(addr, method, size, calls, connections))))
