"""Crashes: kill -9 of an alert server mid-stream, failover between two alert servers on
PostgreSQL, and a PostgreSQL outage during publishing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from chaos.proxy import DbProxy
from listener.v1 import event_service_pb2, event_service_pb2_grpc
from tests.delivery.helpers import create_instance, get_instance, install, logging_task_failures
from tests.support.databases import postgres_database, sqlite_url
from tests.support.jsonl import read_jsonl
from tests.support.samples import sample_event, slow_package
from tests.support.servers import Clients, ServerPair, eventually, free_port


class Publisher:
    """Publishes small batches steadily until stopped; remembers every acknowledged id."""

    def __init__(self, stub: event_service_pb2_grpc.EventServiceStub, per_batch: int = 5) -> None:
        self.stub = stub
        self.per_batch = per_batch
        self.acked: list[str] = []
        self.failures: list[grpc.StatusCode] = []
        self.details: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        n = 0
        while True:
            batch = [sample_event("task_fail", n + i) for i in range(self.per_batch)]
            n += self.per_batch
            try:
                reply = await self.stub.PublishEvents(
                    event_service_pb2.PublishEventsRequest(events=batch), timeout=10
                )
                self.acked.extend(e.id for e in reply.events)
            except grpc.aio.AioRpcError as exc:
                self.failures.append(exc.code())
                self.details.append(f"{exc.code().name}: {exc.details()}")
            await asyncio.sleep(0.01)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def clients(addr: str) -> AsyncIterator[Clients]:
    async with grpc.aio.insecure_channel(addr) as channel:
        yield Clients(channel)


def check_order(delivered: list[str], acked: list[str]) -> None:
    """Every acknowledged event arrived; first deliveries keep publish order; a duplicate
    can only be a redelivery of events right before a crash (same id)."""
    assert set(delivered) >= set(acked)
    first_seen = list(dict.fromkeys(delivered))
    assert [i for i in first_seen if i in set(acked)] == acked
    assert len(delivered) - len(first_seen) <= 600  # at most the batches in flight


async def test_kill9_alert_server_mid_stream(tmp_path: Path) -> None:
    pair = ServerPair(sqlite_url(tmp_path), tmp_path / "data")
    out = tmp_path / "out.jsonl"
    try:
        pair.start_both()
        async with clients(pair.api_addr) as c:
            await logging_task_failures(c, "steady", out)
            publisher = Publisher(c.events)
            publisher.start()
            await eventually(lambda: len(read_jsonl(out)) > 100)
            pair.kill("alert_server")
            await asyncio.sleep(0.5)
            pair.start("alert_server")
            restarted_at = len(publisher.acked)
            await eventually(lambda: len(publisher.acked) >= restarted_at + 200)
            await publisher.stop()
            assert not publisher.failures  # the API server kept acknowledging throughout
            await eventually(
                lambda: set(x["id"] for x in read_jsonl(out)) >= set(publisher.acked), timeout=30
            )
            check_order([x["id"] for x in read_jsonl(out)], publisher.acked)
    finally:
        pair.stop()


async def test_two_alert_servers_failover_on_postgresql(tmp_path: Path) -> None:
    async with postgres_database() as url:
        a, b = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        pair = ServerPair(
            url,
            tmp_path / "data",
            extra_env={"LISTENER_LEASE_TTL": "2", "LISTENER_ALERT_TARGETS": f"{a},{b}"},
        )
        try:
            pair.spawn(
                "alert_a",
                "alert_server",
                a,
                LISTENER_ALERT_ADDR=a,
                LISTENER_DATA_DIR=str(tmp_path / "a"),
                LISTENER_SERVER_ID="alert-a",
            )
            pair.spawn(
                "alert_b",
                "alert_server",
                b,
                LISTENER_ALERT_ADDR=b,
                LISTENER_DATA_DIR=str(tmp_path / "b"),
                LISTENER_SERVER_ID="alert-b",
            )
            pair.start("api_server")
            async with clients(pair.api_addr) as c:
                await install(c, slow_package())
                outs = {}
                for n in range(4):
                    outs[n] = tmp_path / f"out{n}.jsonl"
                    await create_instance(
                        c,
                        f"i{n}",
                        "plugins/slow",
                        {"logFile": str(outs[n]), "delayMs": "2"},
                        ["TASK_FAIL"],
                    )

                async def owners() -> dict[str, str]:
                    return {
                        f"i{n}": (await get_instance(c, f"i{n}")).delivery.owner for n in range(4)
                    }

                # Both servers take a fair share.
                spread = await eventually(lambda: _split(owners()), timeout=60, interval=0.3)
                assert sorted(spread.values()).count("alert-a") == 2

                publisher = Publisher(c.events)
                publisher.start()
                await eventually(lambda: all(len(read_jsonl(o)) > 30 for o in outs.values()))
                pair.kill("alert_a")
                # Once alert-a's leases lapse (2 s, plus a lease cycle), alert-b runs all four.
                moved = await eventually(
                    lambda: _all_owned_by(owners(), "alert-b"), timeout=60, interval=0.2
                )
                assert moved
                await asyncio.sleep(1)
                await publisher.stop()
                assert not publisher.failures  # one alert server down: publishing unaffected
                for out in outs.values():
                    await eventually(
                        lambda o=out: set(x["id"] for x in read_jsonl(o)) >= set(publisher.acked),
                        timeout=30,
                    )
                    check_order([x["id"] for x in read_jsonl(out)], publisher.acked)
        finally:
            pair.stop()


async def _split(owners_coro):  # type: ignore[no-untyped-def]
    owners = await owners_coro
    values = sorted(owners.values())
    return owners if values.count("alert-a") == 2 and values.count("alert-b") == 2 else None


async def _all_owned_by(owners_coro, server):  # type: ignore[no-untyped-def]
    owners = await owners_coro
    return set(owners.values()) == {server}


async def test_postgresql_outage_during_publishing(tmp_path: Path) -> None:
    async with postgres_database() as url:
        proxy = DbProxy(("127.0.0.1", 5432))
        await proxy.start()
        proxied = url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        pair = ServerPair(proxied, tmp_path / "data")
        out = tmp_path / "out.jsonl"
        try:
            await asyncio.to_thread(pair.start_both)  # the proxy needs this loop running
            async with clients(pair.api_addr) as c:
                await logging_task_failures(c, "pg", out)
                publisher = Publisher(c.events)
                publisher.start()
                await eventually(lambda: len(read_jsonl(out)) > 50)
                await proxy.cut()
                await eventually(lambda: len(publisher.failures) >= 3, timeout=30)
                # Never a false success; a call that outlives its deadline during the outage
                # is no success either.
                allowed = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
                assert set(publisher.failures) <= allowed, publisher.details
                assert grpc.StatusCode.UNAVAILABLE in publisher.failures
                await proxy.start()
                restored_at = len(publisher.acked)
                await eventually(lambda: len(publisher.acked) >= restored_at + 100, timeout=30)
                await publisher.stop()
                await eventually(
                    lambda: set(x["id"] for x in read_jsonl(out)) >= set(publisher.acked),
                    timeout=40,
                )
                check_order([x["id"] for x in read_jsonl(out)], publisher.acked)
        finally:
            await asyncio.to_thread(pair.stop)
            await proxy.cut()
