"""A loopback TCP proxy in front of a database that a test or the chaos suite controls.

``cut()`` drops every open connection and refuses new ones (the database is gone for this
client); ``restore()`` lets connections through again. ``shutting_down()`` answers every
new PostgreSQL connection as a PostgreSQL that is shutting down does (SQLSTATE 57P03,
"the database system is shutting down"), which clients see in its own shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

_SSL_REQUEST = 80877103


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DbProxy:
    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self.port = port or _free_port()
        self.mode = "pass"
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    def url(self, url: str) -> str:
        """``url`` with the target's address replaced by the proxy's."""
        host, port = self.target
        return url.replace(f"{host}:{port}", f"127.0.0.1:{self.port}")

    async def start(self) -> None:
        self.mode = "pass"
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

    restore = start

    async def cut(self) -> None:
        """Refuses new connections (nothing listens) and drops the open ones."""
        self.mode = "cut"
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._drop()

    async def shutting_down(self) -> None:
        """Drops the open connections; new ones get PostgreSQL's 57P03 refusal."""
        await self.start()
        self.mode = "shutting_down"
        self._drop()

    async def close(self) -> None:
        await self.cut()

    def _drop(self) -> None:
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "shutting_down":
            with contextlib.suppress(Exception):
                await _refuse_as_shutting_down(reader, writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update({writer, up_writer})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._links.discard(writer)
        self._links.discard(up_writer)


async def _refuse_as_shutting_down(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Reads a PostgreSQL startup (declining SSL) and answers FATAL 57P03."""
    length, code = struct.unpack("!II", await reader.readexactly(8))
    if code == _SSL_REQUEST:
        writer.write(b"N")
        await writer.drain()
        (length,) = struct.unpack("!I", await reader.readexactly(4))
        await reader.readexactly(length - 4)
    else:
        await reader.readexactly(length - 8)
    fields = b"SFATAL\x00VFATAL\x00C57P03\x00Mthe database system is shutting down\x00\x00"
    writer.write(b"E" + struct.pack("!I", len(fields) + 4) + fields)
    await writer.drain()
    writer.close()
