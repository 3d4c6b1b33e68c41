"""Lease discipline: one deliverer per instance, also when the store goes away for longer
than the lease (the alert servers stay up, cut off from the database)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from chaos.checker import check, read_lines
from chaos.proxy import DbProxy
from chaos.witness import witness_package
from tests.delivery.helpers import create_instance, get_instance, install
from tests.delivery.test_failover import Publisher, clients
from tests.support.databases import postgres_database
from tests.support.servers import ServerPair, eventually, free_port

LEASE_TTL = 2.0


async def test_store_outage_longer_than_the_lease_leaves_one_deliverer(tmp_path: Path) -> None:
    """Both alert servers lose the database for 2.5 lease terms while events keep being
    published (the API server still reaches it); afterwards no instance may be delivered by
    both servers at once, nothing may be lost or reordered."""
    async with postgres_database() as url:
        proxies = {name: DbProxy(("127.0.0.1", 5432)) for name in ("a", "b")}
        for proxy in proxies.values():
            await proxy.start()
        addrs = {name: f"127.0.0.1:{free_port()}" for name in proxies}
        pair = ServerPair(
            url,
            tmp_path / "data",
            extra_env={
                "LISTENER_LEASE_TTL": str(LEASE_TTL),
                "LISTENER_ALERT_TARGETS": ",".join(addrs.values()),
            },
        )
        try:
            for name, proxy in proxies.items():
                await asyncio.to_thread(
                    pair.spawn,
                    f"alert_{name}",
                    "alert_server",
                    addrs[name],
                    LISTENER_DB_URL=url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"),
                    LISTENER_ALERT_ADDR=addrs[name],
                    LISTENER_DATA_DIR=str(tmp_path / name),
                    LISTENER_SERVER_ID=f"alert-{name}",
                )
            await asyncio.to_thread(pair.start, "api_server")
            async with clients(pair.api_addr) as c:
                await install(c, witness_package())
                outs = {f"i{n}": tmp_path / f"out{n}.jsonl" for n in range(4)}
                for iid, out in outs.items():
                    await create_instance(
                        c,
                        iid,
                        "plugins/witness",
                        {"logFile": str(out), "delayMs": "3"},
                        ["TASK_FAIL"],
                    )

                async def spread() -> bool:
                    owners = [(await get_instance(c, i)).delivery.owner for i in outs]
                    return owners.count("alert-a") == 2 and owners.count("alert-b") == 2

                await eventually(spread, timeout=30, interval=0.3)
                publisher = Publisher(c.events, per_batch=5)
                publisher.start()
                await eventually(lambda: all(len(read_lines(o)) > 50 for o in outs.values()))
                for proxy in proxies.values():
                    await proxy.cut()
                await asyncio.sleep(LEASE_TTL * 2.5)  # the outage itself, not a wait for state
                for proxy in proxies.values():
                    await proxy.start()
                restored = len(publisher.acked)
                await eventually(lambda: len(publisher.acked) >= restored + 500, timeout=60)
                await publisher.stop()
                assert not publisher.failures, publisher.details
                for out in outs.values():
                    await eventually(
                        lambda o=out: {x["id"] for x in read_lines(o)} >= set(publisher.acked),
                        timeout=60,
                    )
                reports = [check(i, read_lines(o), publisher.acked) for i, o in outs.items()]
                text = "\n".join(r.line() + " " + "; ".join(r.overlap_examples) for r in reports)
                assert all(r.overlaps == 0 for r in reports), text
                assert all(r.lost == 0 and r.out_of_order == 0 for r in reports), text
        finally:
            await asyncio.to_thread(pair.stop)
            for proxy in proxies.values():
                await proxy.cut()


async def test_graceful_handover_delivers_nothing_twice(tmp_path: Path) -> None:
    """A server joining takes its share, then the first one stops cleanly (SIGTERM): every
    instance changes hands while events flow, and since nobody crashed no event arrives
    twice."""
    async with postgres_database() as url:
        addrs = {name: f"127.0.0.1:{free_port()}" for name in ("a", "b")}
        pair = ServerPair(
            url,
            tmp_path / "data",
            extra_env={
                "LISTENER_LEASE_TTL": str(LEASE_TTL),
                "LISTENER_ALERT_TARGETS": ",".join(addrs.values()),
            },
        )

        def spawn(name: str) -> None:
            pair.spawn(
                f"alert_{name}",
                "alert_server",
                addrs[name],
                LISTENER_ALERT_ADDR=addrs[name],
                LISTENER_DATA_DIR=str(tmp_path / name),
                LISTENER_SERVER_ID=f"alert-{name}",
            )

        try:
            await asyncio.to_thread(spawn, "a")
            await asyncio.to_thread(pair.start, "api_server")
            async with clients(pair.api_addr) as c:
                await install(c, witness_package())
                outs = {f"i{n}": tmp_path / f"out{n}.jsonl" for n in range(4)}
                for iid, out in outs.items():
                    await create_instance(
                        c, iid, "plugins/witness", {"logFile": str(out)}, ["TASK_FAIL"]
                    )

                async def owners() -> list[str]:
                    return [(await get_instance(c, i)).delivery.owner for i in outs]

                publisher = Publisher(c.events, per_batch=5)
                publisher.start()
                await eventually(lambda: all(len(read_lines(o)) > 50 for o in outs.values()))
                await asyncio.to_thread(spawn, "b")  # joins: takes two instances over

                async def split() -> bool:
                    return sorted(await owners()) == ["alert-a"] * 2 + ["alert-b"] * 2

                await eventually(split, timeout=30, interval=0.2)
                marks = {i: len(read_lines(o)) for i, o in outs.items()}
                await eventually(
                    lambda: all(len(read_lines(o)) > marks[i] + 50 for i, o in outs.items()),
                    timeout=30,
                )
                proc = pair.procs.pop("alert_a")
                proc.terminate()  # a clean shutdown hands its instances over
                assert await asyncio.to_thread(proc.wait, 30) == 0

                async def all_b() -> bool:
                    return set(await owners()) == {"alert-b"}

                await eventually(all_b, timeout=30, interval=0.2)
                restored = len(publisher.acked)
                await eventually(lambda: len(publisher.acked) >= restored + 200, timeout=60)
                await publisher.stop()
                assert not publisher.failures, publisher.details
                for out in outs.values():
                    await eventually(
                        lambda o=out: {x["id"] for x in read_lines(o)} >= set(publisher.acked),
                        timeout=60,
                    )
                reports = [check(i, read_lines(o), publisher.acked) for i, o in outs.items()]
                text = "\n".join(r.line() for r in reports)
                assert all(r.servers == 2 for r in reports), text  # each changed hands
                assert all(r.duplicates == 0 and r.overlaps == 0 for r in reports), text
                assert all(r.lost == 0 and r.out_of_order == 0 for r in reports), text
        finally:
            await asyncio.to_thread(pair.stop)
