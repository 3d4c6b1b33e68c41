"""Every "the database is not there" error is UNAVAILABLE with a retry hint, never INTERNAL
with a traceback: real driver errors on the three backends, and a call to a running server
whose PostgreSQL is shutting down."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from chaos.proxy import DbProxy
from listener.v1 import event_service_pb2
from listener_core import errors
from listener_core.pipeline.error_status import to_service_error
from tests.support.databases import MYSQL, PG, mysql_database, postgres_database
from tests.support.servers import running_pair


def _addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


async def _error_of(url: str, before: Callable[[], Awaitable[None]] | None = None) -> Exception:
    """The exception a query raises against ``url`` (``before`` runs once connected)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            if before is None:
                raise AssertionError("expected the connection itself to fail")
            await before()
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError("the query succeeded")


@asynccontextmanager
async def _proxied(target: str) -> AsyncIterator[DbProxy]:
    proxy = DbProxy(_addr(target))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


def _assert_unavailable(exc: Exception) -> None:
    err = to_service_error(exc)
    assert isinstance(err, errors.Unavailable), (type(exc), exc, err)
    assert err.reason == "STORE_UNAVAILABLE"
    assert err.retry_delay


async def test_postgresql_shutting_down() -> None:
    """asyncpg's CannotConnectNowError, which SQLAlchemy wraps in a plain DBAPIError."""
    async with postgres_database() as url, _proxied(PG) as proxy:
        await proxy.shutting_down()
        engine = create_async_engine(proxy.url(url))
        try:
            with pytest.raises(Exception) as caught:
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        finally:
            await engine.dispose()
        assert "shutting down" in str(caught.value)
        _assert_unavailable(caught.value)


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
async def test_connection_refused_and_dropped(kind: str) -> None:
    target = PG if kind == "postgresql" else MYSQL
    database = postgres_database if kind == "postgresql" else mysql_database
    async with database() as url, _proxied(target) as proxy:
        proxied = proxy.url(url)
        _assert_unavailable(await _error_of(proxied, proxy.cut))  # dropped mid-session
        _assert_unavailable(await _error_of(proxied))  # refused: nothing listens


def _aiosqlite_workers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.endswith("(_connection_worker_thread)")}


async def test_sqlite_file_that_cannot_be_opened(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'listener.db'}"
    before = _aiosqlite_workers()
    _assert_unavailable(await _error_of(url))
    # After a failed connect aiosqlite stops its worker thread without waiting for it, and
    # the worker then answers on this test's loop: let it end while the loop still runs, or
    # on a busy box it meets a closed loop and raises in its thread during the next test.
    for worker in _aiosqlite_workers() - before:
        await asyncio.to_thread(worker.join, 10)
        assert not worker.is_alive(), "aiosqlite's worker thread did not stop"


async def test_a_server_whose_postgresql_shuts_down_answers_unavailable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        postgres_database() as url,
        _proxied(PG) as proxy,
        running_pair(proxy.url(url), tmp_path) as pair,
    ):
        await pair.clients.events.ListEvents(event_service_pb2.ListEventsRequest())
        caplog.set_level(logging.INFO)
        await proxy.shutting_down()
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pair.clients.events.ListEvents(
                    event_service_pb2.ListEventsRequest(), timeout=30
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
        raw = dict(caught.value.trailing_metadata() or ()).get("grpc-status-details-bin")
        status = status_pb2.Status.FromString(raw)
        hints = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        assert hints, status
        errors_logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors_logged, [r.getMessage() for r in errors_logged]
        await proxy.restore()
