"""A created instance claims its own lease: it runs at once, and no other held lease is
renewed for it (creating N instances used to renew every held lease N times). Claims of many
leases (a restart takes every free one) go in batches and take exactly those still as watched."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from pathlib import Path

from sqlalchemy import select, update

from event_store import leases
from event_store.models import Delivery, ListenerInstance, Package, Plugin, utcnow
from event_store.retry import in_transaction
from event_store.store import Store
from tests.delivery.helpers import create_instance, install
from tests.support.samples import logger_package
from tests.support.servers import Pair, eventually, running_pair


async def _leases(pair: Pair) -> dict[str, tuple[str, int, object]]:
    async with pair.alert.store.transaction() as session:
        rows = await session.execute(
            select(Delivery.instance_id, Delivery.owner, Delivery.fence, Delivery.lease_until)
        )
        return {iid: (owner, int(fence), until) for iid, owner, fence, until in rows.all()}


async def test_a_created_instance_claims_its_lease_and_renews_no_other(
    db_url: str, tmp_path: Path
) -> None:
    # A long lease: no periodic cycle (every third of it) falls within the test.
    async with running_pair(db_url, tmp_path, lease_ttl=600.0) as pair:
        server = pair.alert.host.server_id
        await install(pair.clients, logger_package())
        out = tmp_path / "out.jsonl"
        await create_instance(
            pair.clients, "a", "plugins/logger", {"logFile": str(out)}, ["TASK_FAIL"]
        )
        first = await _leases(pair)
        assert first["a"][0] == server
        assert first["a"][2] is not None
        assert "a" in pair.alert.host.runners

        for name in ("b", "c"):
            await create_instance(
                pair.clients, name, "plugins/logger", {"logFile": str(out)}, ["TASK_FAIL"]
            )
        after = await _leases(pair)
        # Each new one is held, with a fence of its own claim, and runs when the call returns.
        for name in ("b", "c"):
            assert after[name][0] == server
            assert after[name][2] is not None
            assert name in pair.alert.host.runners
            assert pair.alert.host.runners[name].fence == after[name][1]
        # The lease held before is exactly as it was: not renewed per creation.
        assert after["a"] == first["a"]

        # The periodic renewal still covers every held lease in one cycle.
        await pair.alert.host.lease_cycle()
        renewed = await _leases(pair)
        assert {iid: owner for iid, (owner, _, _) in renewed.items()} == dict.fromkeys(
            "abc", server
        )
        assert all(renewed[i][2] != after[i][2] for i in "abc")
        assert await eventually(
            lambda: all(not r.stopped for r in pair.alert.host.runners.values())
        )


async def test_claims_in_batches_take_exactly_the_leases_still_as_watched(db_url: str) -> None:
    """``claim_many`` over more than one batch: free leases still free with the watched fence
    and lapsed leases still carrying the watched token are taken (fence + 1); a free lease
    whose fence moved, one taken meanwhile and a lapsed one renewed meanwhile are not."""
    count = leases.CLAIM_CHUNK + 7
    ids = [f"i-{n:04d}" for n in range(count)]
    store = await Store.open(db_url)
    try:
        async with store.transaction() as session:
            session.add(Package(sha256="0" * 64, size=0, data=b""))
            session.add(Plugin(id="p", version="1", entry="m:C", sha256="0" * 64))
        async with store.transaction() as session:
            session.add_all(ListenerInstance(id=i, plugin_id="p", event_types="1") for i in ids)
        old = utcnow()
        async with store.transaction() as session:
            session.add_all(Delivery(instance_id=i, owner="", fence=3) for i in ids[:-2])
            session.add_all(
                Delivery(instance_id=i, owner="gone", fence=5, lease_until=old) for i in ids[-2:]
            )
        watched = await in_transaction(store, partial(leases.others, server_id="me"))
        assert len(watched) == count
        # Meanwhile: one free lease taken and given back (fence 4), one taken by "b", one
        # lapsed lease renewed by its owner.
        moved, taken, renewed = ids[1], ids[count - 3], ids[-1]
        async with store.transaction() as session:
            await session.execute(
                update(Delivery).where(Delivery.instance_id == moved).values(fence=4)
            )
            await session.execute(
                update(Delivery).where(Delivery.instance_id == taken).values(owner="b", fence=4)
            )
            await session.execute(
                update(Delivery)
                .where(Delivery.instance_id == renewed)
                .values(lease_until=old + timedelta(seconds=5))
            )
        until = utcnow() + timedelta(seconds=30)
        claimed = await in_transaction(
            store,
            lambda s: leases.claim_many(s, sorted(watched.items()), "me", until),
        )
        expected = {i: 4 for i in ids[:-2] if i not in (moved, taken)} | {ids[-2]: 6}
        assert claimed == expected
        async with store.reader() as session:
            rows = await session.execute(
                select(Delivery.instance_id, Delivery.owner, Delivery.fence)
            )
            stored = {iid: (owner, int(fence)) for iid, owner, fence in rows.all()}
        assert {i: f for i, (o, f) in stored.items() if o == "me"} == expected
        assert stored[moved] == ("", 4)
        assert stored[taken] == ("b", 4)
        assert stored[renewed] == ("gone", 5)
    finally:
        await store.close()
