"""The store both servers open: engine, sessions and schema upgrade in one object."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from event_store import events, pg_append, stored
from event_store.engine import create_engine
from event_store.events import StoredEvent
from event_store.migrate import upgrade_schema
from event_store.pg_connection import KeptConnection
from event_store.sqlite_reader import KeptSqliteReader
from event_store.sqlite_writer import SqliteWriter


class Store:
    """Writes go through ``transaction()``, reads through ``reader()``; on SQLite the two
    use separate engines (see ``event_store.engine.create_engine``)."""

    def __init__(
        self,
        engine: AsyncEngine,
        read_engine: AsyncEngine | None = None,
        writer: SqliteWriter | None = None,
    ) -> None:
        self.engine = engine
        self.read_engine = read_engine or engine
        self.writer = writer
        # PostgreSQL appends go through a connection kept for them (no checkout, no pre-ping).
        self.pg_writer = KeptConnection(engine) if self.backend == "postgresql" else None
        # And the alert server's reads of new events, while that connection is free.
        self.pg_reader = KeptConnection(self.read_engine) if self.pg_writer else None
        path = self.read_engine.url.database or ""
        on_file = self.backend == "sqlite" and path not in ("", ":memory:")
        # On a SQLite file, those reads through an aiosqlite connection kept for them.
        self.sqlite_reader = KeptSqliteReader(path) if on_file else None
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)

    @property
    def backend(self) -> str:
        return self.engine.url.get_backend_name()

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> Store:
        engine = create_engine(url)
        if migrate:
            await upgrade_schema(engine)
        if engine.url.get_backend_name() == "sqlite":
            path = engine.url.database
            writer = SqliteWriter(Path(path)) if path and path != ":memory:" else None
            return cls(engine, create_engine(url, writer=False), writer)
        return cls(engine)

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.close()
        for kept in (self.pg_writer, self.pg_reader, self.sqlite_reader):
            if kept is not None:
                await kept.close()
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on normal exit and rolls back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def append_groups(
        self, groups: events.Groups, traces: events.Traces = None
    ) -> list[list[StoredEvent]]:
        """Appends and commits publishes (see :func:`event_store.events.append_groups`); on
        a SQLite file in one hop to its writer thread, on PostgreSQL in one statement on a
        connection kept for it."""
        if self.writer is not None:
            return await self.writer.append_groups(groups, traces)
        if self.pg_writer is not None:
            return await pg_append.append_groups_pg(self.pg_writer.fetchrow, groups, traces)
        async with self.write_connection() as connection:
            return await events.append_groups(connection, groups, traces)

    async def read_after(
        self, after: int, types: Sequence[int] | None, limit: int
    ) -> list[StoredEvent]:
        """As :func:`event_store.events.read_after`. On PostgreSQL the one query goes to the
        reading connection kept for it, so it is one round trip, not the session's four
        (checkout with its pre-ping, BEGIN, the query, ROLLBACK); while that connection is
        busy, through the pool as before, so reads never queue behind each other. On a SQLite
        file likewise, through ``sqlite_reader``: one hop to its thread, not the session's five."""
        kept = self.pg_reader or self.sqlite_reader
        if kept is not None and not kept.busy and (types is None or types):
            chosen = list(types) if types is not None else []
            sql = events.read_sql(self.read_engine.dialect, len(chosen))
            return stored.stored_events(await kept.fetch(sql, (after, *chosen, limit)))
        async with self.reader() as session:
            return await events.read_after(session, after, types, limit)

    async def find_requests(
        self, keys: Sequence[events.RequestKey]
    ) -> dict[events.RequestKey, events.EarlierRequest]:
        """As :func:`event_store.events.find_requests`; on PostgreSQL, as :meth:`read_after`,
        one statement on the kept reading connection while it is free."""
        kept = self.pg_reader
        if kept is not None and not kept.busy and keys:
            params = events.find_requests_params(keys)
            return events.match_requests(keys, await kept.fetch(events.FIND_REQUESTS_PG, params))
        async with self.reader() as session:
            return await events.find_requests(session, keys)

    @asynccontextmanager
    async def write_connection(self) -> AsyncIterator[AsyncConnection]:
        """A plain connection in a transaction (commits on normal exit): for the hot write
        paths that need no ORM session."""
        async with self.engine.begin() as connection:
            yield connection

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncSession]:
        async with self.read_sessions() as session:
            yield session
