"""A PostgreSQL connection kept for one hot statement: one round trip per use.

Through the pool every group commit paid a checkout with its pre-ping (a round trip of its
own, ``pool_pre_ping``) before the append's one statement, and the statement went through
SQLAlchemy's execution and cursor adaptation. Here a connection is taken from the engine
once (so the same URL, connect arguments and driver) and kept; each statement is one call
on the asyncpg connection under it, outside any transaction (so it commits on its own), and
asyncpg's statement cache makes it a prepared statement after the first use. The API
server's group committer appends one group at a time, so one connection serves it;
concurrent callers queue on a lock.

Errors leave as they would through the engine: asyncpg's exceptions translated to the
dialect's DB-API classes and wrapped as SQLAlchemy's (a repeated request id is an
``IntegrityError``; a lost connection a ``DBAPIError`` with ``connection_invalidated``, which
the servers answer with UNAVAILABLE). A lost or broken connection is dropped, and the next
append connects again; nothing is retried here, so an ack still means this statement
committed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class KeptConnection:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._lock = asyncio.Lock()
        self._held: AsyncConnection | None = None  # keeps the pool's connection checked out
        self._driver: Any = None  # the asyncpg connection under it

    async def fetchrow(self, sql: str, params: tuple[Any, ...]) -> Any:
        """One statement in autocommit, committed when it returns: its first row."""
        async with self._lock:
            return await self._run("fetchrow", sql, params)

    async def fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """One query in autocommit: its rows."""
        async with self._lock:
            return await self._run("fetch", sql, params)  # type: ignore[no-any-return]

    @property
    def busy(self) -> bool:
        """Whether a statement is running or waiting for the connection."""
        return self._lock.locked()

    async def close(self) -> None:
        async with self._lock:
            await self._drop(invalidate=False)

    async def _run(self, method: str, sql: str, params: tuple[Any, ...]) -> Any:
        try:
            if self._driver is not None and self._driver.is_closed():
                await self._drop(invalidate=True)  # terminated by a cancelled append
            if self._driver is None:
                await self._connect()
            return await getattr(self._driver, method)(sql, *params)
        except Exception as exc:
            raise await self._translated(sql, params, exc) from exc
        except BaseException:  # cancelled mid-statement: its outcome is unknown, and so is
            if self._driver is not None:  # the connection's state; the next append reconnects
                self._driver.terminate()
            raise

    async def _connect(self) -> None:
        held = await self.engine.connect()
        try:
            raw = await held.get_raw_connection()
            self._driver = raw.driver_connection
        except BaseException:
            await held.close()
            raise
        self._held = held

    async def _drop(self, invalidate: bool) -> None:
        held, self._held, self._driver = self._held, None, None
        if held is not None:
            if invalidate:
                await held.invalidate()  # the pool must not hand this connection out again
            await held.close()

    async def _translated(self, sql: str, params: tuple[Any, ...], exc: Exception) -> Exception:
        """``exc`` as the engine would have raised it; drops the connection if it is lost."""
        if isinstance(exc, sa_exc.SQLAlchemyError):  # from the pool, when connecting
            return exc
        dialect = self.engine.dialect
        dbapi = dialect.loaded_dbapi
        try:
            AsyncAdapt_asyncpg_connection._handle_exception_no_connection(dbapi, exc)
        except dbapi.Error as translated:
            driver = self._driver
            lost = (driver is not None and driver.is_closed()) or dialect.is_disconnect(
                translated, None, None
            )
            if lost or self._driver is None:
                await self._drop(invalidate=True)
            return sa_exc.DBAPIError.instance(
                sql, params, translated, dbapi.Error, connection_invalidated=lost, dialect=dialect
            )
        except Exception:  # not the driver's: OSError, TimeoutError, ... as they are
            pass
        await self._drop(invalidate=True)
        return exc
