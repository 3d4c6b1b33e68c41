"""Engine creation: one async SQLAlchemy engine per server, tuned per backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
}


def normalize_url(url: str) -> URL:
    """Accepts plain ``postgresql://`` style URLs and picks the async driver we ship."""
    parsed = make_url(url)
    if "+" not in parsed.drivername and parsed.drivername in _ASYNC_DRIVERS:
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[parsed.drivername])
    return parsed


def sqlite_pragmas(dbapi_conn: Any, _record: Any = None) -> None:
    # WAL lets the alert server read while an API server writes. synchronous=NORMAL in WAL
    # mode keeps every commit across a process crash (kill -9); only an OS crash or power
    # loss can drop the last commits. busy_timeout waits for the writer instead of failing.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_manual_transactions(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" hook below emits BEGIN


def _sqlite_begin_immediate(conn: Any) -> None:
    # A deferred transaction that reads and then writes fails at once (SQLITE_BUSY, no
    # busy wait) when another process committed in between; taking the write lock at
    # BEGIN makes writers queue on busy_timeout instead.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str, *, writer: bool = True, **kwargs: Any) -> AsyncEngine:
    """An engine for ``url``. On SQLite, a ``writer`` engine begins every transaction
    with BEGIN IMMEDIATE; readers stay deferred so they never wait on writers (WAL)."""
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed, **kwargs)
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        if writer:
            event.listen(engine.sync_engine, "connect", _sqlite_manual_transactions)
            event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    if backend == "mysql":
        kwargs.setdefault("isolation_level", "READ COMMITTED")
    return create_async_engine(parsed, **kwargs)
