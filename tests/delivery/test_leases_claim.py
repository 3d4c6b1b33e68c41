"""A created instance claims its own lease: it runs at once, and no other held lease is
renewed for it (creating N instances used to renew every held lease N times)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from event_store.models import Delivery
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
