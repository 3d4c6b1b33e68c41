"""Unique, throw-away databases on the machine's real PostgreSQL and MariaDB servers.

A test that needs one of these servers fails (never skips) with a message saying how to
start it. Override the addresses with LISTENER_TEST_PG / LISTENER_TEST_MYSQL
(host:port).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

PG = os.environ.get("LISTENER_TEST_PG", "127.0.0.1:5432")
MYSQL = os.environ.get("LISTENER_TEST_MYSQL", "127.0.0.1:3306")


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'listener.db'}"


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    import asyncpg

    host, port = _split(PG)
    name = f"lt_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(host=host, port=port, user="postgres", database="postgres")
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is needed at {PG} (trust auth, user postgres) and is not reachable: "
            f"{exc}. Start it: "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgresql+asyncpg://postgres@{host}:{port}/{name}"
    finally:
        admin = await asyncpg.connect(host=host, port=port, user="postgres", database="postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def mysql_database() -> AsyncIterator[str]:
    import aiomysql

    host, port = _split(MYSQL)
    name = f"lt_{uuid.uuid4().hex[:12]}"
    try:
        admin = await aiomysql.connect(host=host, port=port, user="root", password="")
    except Exception as exc:
        pytest.fail(
            f"MariaDB/MySQL is needed at {MYSQL} (root, no password) and is not reachable: {exc}. "
            "Start it: start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
        )
    try:
        async with admin.cursor() as cur:
            await cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        admin.close()
    try:
        yield f"mysql+aiomysql://root@{host}:{port}/{name}"
    finally:
        admin = await aiomysql.connect(host=host, port=port, user="root", password="")
        try:
            async with admin.cursor() as cur:
                # Like PostgreSQL's DROP DATABASE … WITH (FORCE): a test that failed half-way
                # may leave a transaction open on its tables, and DROP DATABASE would wait for
                # its metadata lock for lock_wait_timeout (a day): the suite hung instead of
                # reporting the failure.
                await cur.execute(
                    "SELECT id FROM information_schema.processlist WHERE db = %s", (name,)
                )
                for (thread,) in await cur.fetchall():
                    with contextlib.suppress(aiomysql.Error):  # it may have ended meanwhile
                        await cur.execute(f"KILL {int(thread)}")
                await cur.execute("SET SESSION lock_wait_timeout = 60")
                await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            admin.close()


@asynccontextmanager
async def database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield sqlite_url(tmp_path)
    elif kind == "postgresql":
        async with postgres_database() as url:
            yield url
    elif kind == "mysql":
        async with mysql_database() as url:
            yield url
    else:
        raise ValueError(kind)
