"""The connection kept on PostgreSQL for the append: one statement, the same errors as
through the pool, and a new connection after a lost one."""

from __future__ import annotations

import pytest

from chaos.proxy import DbProxy
from event_store.store import Store
from listener_core import errors
from listener_core.pipeline.error_status import to_service_error
from tests.support.databases import PG, postgres_database


def _addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


async def test_a_lost_writer_connection_is_unavailable_then_reconnects() -> None:
    """The append keeps one connection: when it is cut, the append fails as a store outage
    (UNAVAILABLE, nothing committed), and the next append after the store is back connects
    anew and continues the sequence."""
    async with postgres_database() as url:
        proxy = DbProxy(_addr(PG))
        await proxy.start()
        store = await Store.open(proxy.url(url))
        try:
            [[first]] = await store.append_groups([([(20, b"a")], None)])
            await proxy.cut()
            with pytest.raises(Exception) as caught:
                await store.append_groups([([(20, b"b")], None)])
            assert isinstance(to_service_error(caught.value), errors.Unavailable), caught.value
            await proxy.shutting_down()  # reconnecting meets PostgreSQL's 57P03
            with pytest.raises(Exception) as caught:
                await store.append_groups([([(20, b"c")], None)])
            assert isinstance(to_service_error(caught.value), errors.Unavailable), caught.value
            await proxy.restore()
            [[again]] = await store.append_groups([([(20, b"d")], None)])
            assert (first.sequence, again.sequence) == (1, 2)  # the failed ones left no gap
        finally:
            await store.close()
            await proxy.close()
