"""Group commits on SQLite in a single hop to a writer thread.

Through aiosqlite every statement of a publish transaction is its own round trip between
the event loop and the driver's thread: BEGIN, the counter, the insert, the request ids,
COMMIT, and the pool's reset. Each waits for the loop, which is busy serving gRPC calls,
so a commit of a few events took over 10 ms and most of the API server's store CPU went to
handing work back and forth. Here the whole transaction is one function run on a thread
that owns its own ``sqlite3`` connection (same pragmas as the engine's), and the event
loop waits once.

Errors come back as SQLAlchemy's exception classes, as they do from the engine, so callers
(a repeated request_id is an IntegrityError) and the status mapping need no second case.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import sqlite

from event_store import events
from event_store.engine import sqlite_pragmas
from event_store.events import StoredEvent

_DIALECT = sqlite.dialect()
_DIALECT.update_returning = sqlite3.sqlite_version_info >= (3, 35)
Groups = events.Groups


class SqliteWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._conn: sqlite3.Connection | None = None

    async def append_groups(
        self, groups: Groups, traces: events.Traces = None
    ) -> list[list[StoredEvent]]:
        """As :func:`event_store.events.append_groups`, committed when it returns."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._append, groups, traces)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._disconnect)
        self._thread.shutdown(wait=True)

    # -- on the writer thread ---------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            sqlite_pragmas(conn)  # the engine's own: WAL, crash-safe commits, busy wait
            self._conn = conn
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _append(self, groups: Groups, traces: events.Traces) -> list[list[StoredEvent]]:
        statement = "BEGIN IMMEDIATE"
        try:
            conn = self._connection()
            conn.execute(statement)
            try:
                total = sum(len(items) for items, _ in groups)
                statement = events.counter_sql(_DIALECT)
                row = conn.execute(statement, (total,)).fetchone()
                if row is None:  # SQLite before 3.35 has no RETURNING
                    statement = events.COUNTER_VALUE_SQL
                    row = conn.execute(statement).fetchone()
                (last,) = row
                plan = events.plan_append(_DIALECT, groups, int(last) - total + 1, traces)
                statement = plan.event_sql
                conn.executemany(statement, plan.event_rows)
                if plan.request_rows:
                    statement = plan.request_sql
                    conn.executemany(statement, plan.request_rows)
                statement = "COMMIT"
                conn.execute(statement)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
                exc, (sqlite3.IntegrityError, sqlite3.OperationalError)
            ):
                self._disconnect()  # a damaged connection: the next group opens a new one
            raise sa_exc.DBAPIError.instance(
                statement, None, exc, sqlite3.Error
            ) from exc  # IntegrityError, OperationalError, ... as from the engine
        return plan.results
