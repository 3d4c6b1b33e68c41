"""grpc.health.v1 tells the truth: NOT_SERVING while the store is cut (SERVING again by
itself once it is back) and while a server drains after SIGTERM, as seen by a Watch client
and by grpcurl's Check."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from api_server.app import SERVICE_NAMES
from chaos.proxy import DbProxy
from tests.support.databases import postgres_database
from tests.support.grpcurl import grpcurl
from tests.support.servers import ServerPair, eventually, running_pair

SERVING = "SERVING"
NOT_SERVING = "NOT_SERVING"


class Watcher:
    """A Watch stream kept open on one service; remembers every status it was sent."""

    def __init__(self, addr: str, service: str = "") -> None:
        self.addr = addr
        self.service = service
        self.seen: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(self.addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            call = stub.Watch(health_pb2.HealthCheckRequest(service=self.service))
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for reply in call:
                    self.seen.append(
                        health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                    )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Watcher]:
        self._task = asyncio.create_task(self._run())
        try:
            await eventually(lambda: self.seen, timeout=30)
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def last(self) -> str | None:
        return self.seen[-1] if self.seen else None


async def checked(addr: str, service: str = "") -> str:
    """The status grpcurl's Check reports (run off the loop: the servers may live on it)."""
    proc = await asyncio.to_thread(
        grpcurl, addr, "grpc.health.v1.Health/Check", data={"service": service}
    )
    return str(json.loads(proc.stdout)["status"])


async def test_store_cut_is_not_serving_until_it_is_back(tmp_path: Path) -> None:
    async with postgres_database() as url:
        proxy = DbProxy(("127.0.0.1", 5432))
        await proxy.start()
        proxied = url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        try:
            async with running_pair(proxied, tmp_path) as pair:
                api, alert = pair.api_addr, pair.alert_addr
                events = SERVICE_NAMES[2]  # per service, not only the overall status
                async with (
                    Watcher(api).running() as api_all,
                    Watcher(api, events).running() as api_events,
                    Watcher(alert).running() as alert_all,
                ):
                    for w in (api_all, api_events, alert_all):
                        assert w.seen == [SERVING]
                    assert await checked(api) == SERVING
                    await proxy.cut()
                    for w in (api_all, api_events, alert_all):
                        await eventually(lambda w=w: w.last() == NOT_SERVING, timeout=60)
                    assert await checked(api) == NOT_SERVING
                    assert await checked(api, events) == NOT_SERVING
                    assert await checked(alert) == NOT_SERVING
                    # The liveness name stays SERVING: a store outage is no reason to restart.
                    assert await checked(api, "liveness") == SERVING
                    assert await checked(alert, "liveness") == SERVING
                    await proxy.start()  # the store is back: SERVING again, by itself
                    for w in (api_all, api_events, alert_all):
                        await eventually(lambda w=w: w.last() == SERVING, timeout=60)
                        assert w.seen == [SERVING, NOT_SERVING, SERVING]
                    assert await checked(api) == SERVING
                    assert await checked(alert) == SERVING
        finally:
            await proxy.cut()


async def test_drain_on_sigterm_is_not_serving_before_it_stops(tmp_path: Path) -> None:
    async with postgres_database() as url:
        pair = ServerPair(url, tmp_path / "data", extra_env={"LISTENER_DRAIN_SECONDS": "3"})
        try:
            await asyncio.to_thread(pair.start_both)
            for which, addr in (("api_server", pair.api_addr), ("alert_server", pair.alert_addr)):
                async with Watcher(addr).running() as watcher:
                    assert watcher.seen == [SERVING]
                    proc = pair.procs[which]
                    proc.send_signal(signal.SIGTERM)
                    await eventually(lambda w=watcher: w.last() == NOT_SERVING, timeout=30)
                    # Still accepting calls while draining: a probe is answered, NOT_SERVING.
                    assert await checked(addr) == NOT_SERVING
                    assert proc.poll() is None
                    assert await asyncio.to_thread(proc.wait, 60) == 0
                pair.procs.pop(which)
        finally:
            await asyncio.to_thread(pair.stop)
