"""A publish whose request id was already used fails whole on every store: nothing of it is
written, the counter rolls back, and the next publish goes on from where the store was."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from event_store import events
from event_store.store import Store
from tests.support.databases import database


def key(request_id: str) -> events.RequestKey:
    return events.RequestKey("token:test", request_id, "d" * 64)


# SQLite's writer thread, PostgreSQL's one-statement append, MariaDB's transactional path.
@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
async def test_a_repeated_request_id_is_an_integrity_error_and_writes_nothing(
    kind: str, tmp_path: Path
) -> None:
    async with database(kind, tmp_path) as url:
        store = await Store.open(url)
        try:
            await store.append_groups([([(20, b"a")], key("same"))])
            with pytest.raises(sa_exc.IntegrityError):
                await store.append_groups(
                    [([(21, b"b"), (21, b"c")], key("other")), ([(22, b"d")], key("same"))]
                )
            async with store.reader() as session:
                assert await events.max_sequence(session) == 1  # the counter rolled back too
                count = await session.execute(text("SELECT count(*) FROM events"))
                assert count.scalar_one() == 1
                assert await events.find_request(session, key("other")) is None
            # The store goes on after a failed group.
            [[after]] = await store.append_groups([([(20, b"e")], None)])
            assert after.sequence == 2
        finally:
            await store.close()
