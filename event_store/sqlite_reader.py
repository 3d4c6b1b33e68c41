"""An aiosqlite connection kept for the alert server's reads of new events on a SQLite file.

Through a pooled session a one-row read was a checkout, the query and the reset on return:
five hops to aiosqlite's thread and back, about 450 µs of CPU (as much as everything else
the alert server did per event at 1,000 single publishes a second, BENCHMARKS.md). Here one
connection in autocommit is kept, and each read is one ``execute_fetchall``: one hop, about
25 µs. Each read is a transaction of its own as before, so it sees every commit before it;
the query runs on the connection's thread, never on the event loop (a busy wait or a slow
disk does not stall it). The interface is ``pg_connection.KeptConnection``'s ``fetch`` and
``busy``; ``Store.read_after`` reads through the pool while a read is running here.

A read that fails (or is cancelled) drops the connection, and the next read opens a new one.
"""

from __future__ import annotations

import contextlib
from typing import Any


class KeptSqliteReader:
    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: Any = None  # aiosqlite.Connection
        self._busy = False

    @property
    def busy(self) -> bool:
        return self._busy

    async def fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """One query in autocommit: its rows."""
        self._busy = True
        try:
            conn = self._conn or await self._open()
            try:
                return list(await conn.execute_fetchall(sql, params))
            except BaseException:
                self._drop()
                raise
        finally:
            self._busy = False

    async def _open(self) -> Any:
        import aiosqlite

        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await conn.executescript("PRAGMA busy_timeout=30000; PRAGMA query_only=ON;")
        except BaseException:
            conn.stop()
            raise
        self._conn = conn
        return conn

    def _drop(self) -> None:
        """Closes the connection without waiting (it may be broken, or mid-query)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.stop()  # closes it on its own thread, after what is queued there

    async def close(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            await conn.close()
            self._conn = None
        except Exception:
            self._drop()
