"""Creates or upgrades the schema at server start (Alembic), safely from several processes.

Both servers may start at once against the same database, so the upgrade runs under a
database-wide lock: an advisory lock on PostgreSQL, GET_LOCK on MySQL/MariaDB, and an
exclusive file lock next to the database file on SQLite.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

_LOCK_KEY = 0x6C697374656E6572  # "listener"
MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _upgrade(conn: Connection) -> None:
    current = MigrationContext.configure(conn).get_current_revision()
    if current == head_revision():
        return
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
    conn.commit()


async def upgrade_schema(engine: AsyncEngine) -> None:
    backend = engine.url.get_backend_name()
    if backend == "sqlite":
        db = engine.url.database or ""
        lock: Any = (
            _file_lock(Path(db + ".migrate.lock"))
            if db and db != ":memory:"
            else contextlib.nullcontext()
        )
        with lock:
            async with engine.connect() as conn:
                await conn.run_sync(_upgrade)
        return
    async with engine.connect() as conn:
        if backend == "postgresql":
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
        else:
            await conn.execute(text("SELECT GET_LOCK('listener_migrate', 60)"))
        await conn.commit()
        try:
            await conn.run_sync(_upgrade)
        finally:
            await conn.rollback()  # a failed upgrade leaves the transaction aborted
            if backend == "postgresql":
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
            else:
                await conn.execute(text("SELECT RELEASE_LOCK('listener_migrate')"))
            await conn.commit()
