"""The migrations build exactly the schema the models describe, and 0003 keeps the events."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text

from event_store import events
from event_store.engine import create_engine
from event_store.migrate import alembic_config, upgrade_schema
from event_store.models import Base
from event_store.store import Store
from tests.support.databases import sqlite_url


def _differences(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_migrated_schema_matches_the_models(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        await upgrade_schema(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
    finally:
        await engine.dispose()


def _upgrade_to(conn: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)
    conn.commit()


async def test_sqlite_sequence_becomes_the_rowid_with_every_event_kept(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    engine = create_engine(url)
    async with engine.connect() as conn:
        await conn.run_sync(_upgrade_to, "0002")
        for seq in (1, 2, 3):
            await conn.execute(
                text(
                    "INSERT INTO events (sequence, id, type, publish_time, body) "
                    "VALUES (:s, :i, 20, '2026-01-01 00:00:00.000000', x'0a01')"
                ),
                {"s": seq, "i": f"id-{seq}"},
            )
        await conn.execute(text("UPDATE counters SET value = 3"))
        await conn.commit()
    await engine.dispose()

    store = await Store.open(url)  # upgrades to head, as a server start does
    try:
        async with store.reader() as session:
            rows = await events.read_after(session, 0, None, 10)
            assert [(r.sequence, r.id) for r in rows] == [(1, "id-1"), (2, "id-2"), (3, "id-3")]
            # sequence is an alias of the rowid now: no separate primary key index.
            aliased = await session.execute(
                text("SELECT count(*) FROM events WHERE rowid = sequence")
            )
            assert aliased.scalar_one() == 3
            indexes = await session.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")
            )
            names = sorted(name for (name,) in indexes)
            assert "ix_events_type_sequence" in names
            assert len(names) == 2  # that index and the unique index on id; no primary key index
        async with store.write_connection() as connection:
            [stored] = await events.append_groups(connection, [([(20, b"\n\x01")], None)])
        assert [e.sequence for e in stored] == [4]
    finally:
        await store.close()


def test_event_ids_are_time_ordered_uuids() -> None:
    ids = [events.new_event_id() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 36 and i[14] == "7" for i in ids)  # version 7


def test_a_group_of_ids_is_as_ordered_as_ids_made_one_by_one() -> None:
    ids = [i for n in range(40) for i in [events.new_event_id(), *events.new_event_ids(n)]]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 36 and i[14] == "7" for i in ids)


async def test_publish_time_round_trips_through_the_driver_level_insert(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        async with store.write_connection() as connection:
            key = events.RequestKey("token:t", "r1", "0" * 64)
            [stored] = await events.append_groups(connection, [([(20, b"a"), (21, b"b")], key)])
        async with store.reader() as session:
            rows = await events.read_after(session, 0, None, 10)
        assert rows == stored
        async with store.reader() as session:
            earlier = await events.find_request(session, key)  # the request's row
            assert earlier is not None
            assert await events.earlier_events(session, earlier) == stored
        assert rows[0].publish_time.tzinfo is not None
        assert abs((rows[0].publish_time - stored[0].publish_time).total_seconds()) < 1e-3
    finally:
        await store.close()


async def test_trace_context_is_stored_per_publish_and_read_back(db_url: str) -> None:
    """Traced publishes keep their context with each event; untraced ones keep NULL."""
    traced = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    store = await Store.open(db_url)
    try:
        first, second = await store.append_groups(
            [([(20, b"a"), (21, b"b")], None), ([(20, b"c")], None)], [traced, None]
        )
        [third] = await store.append_groups([([(20, b"d")], None)])
        assert [e.traceparent for e in (*first, *second, *third)] == [traced, traced, None, None]
        async with store.reader() as session:
            rows = await events.read_after(session, 0, None, 10)
            between = await events.events_between(session, 1, 4)
        assert rows == between == [*first, *second, *third]
    finally:
        await store.close()
