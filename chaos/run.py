"""The chaos run: real servers as subprocesses, their store behind proxies this run cuts,
kill -9 in a loop, a steady publisher, and the witness files checked at the end.

On PostgreSQL: two API servers and two alert servers, each reaching the database through a
proxy of its own. The disruptions, in turn: the database cut off from one alert server only;
cut off from every server; a store outage longer than the lease; kill -9 of an alert
server; kill -9 of an API server (each killed server is restarted a moment later). On
SQLite (a file, no TCP to cut): one alert server and two API servers, with the kills.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from chaos.checker import InstanceReport, check, read_lines
from chaos.cluster import PG, Cluster, build_cluster
from chaos.witness import witness_package
from listener.v1 import (
    event_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    listener_instance_pb2,
    listener_instance_pb2_grpc,
    plugin_pb2,
    plugin_pb2_grpc,
)

INSTANCES = 4
TASK_FAIL = event_pb2.EventType.Value("EVENT_TYPE_TASK_FAIL")


def _say(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


class Publisher:
    """Publishes steadily, round-robin over the API servers, one call at a time (so the
    acknowledged ids are in sequence order); remembers what was acknowledged."""

    def __init__(self, addrs: list[str], per_batch: int = 5, pause: float = 0.03) -> None:
        self.addrs = addrs
        self.per_batch = per_batch
        self.pause = pause
        self.acked: list[str] = []
        self.failures: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        channels = [grpc.aio.insecure_channel(a) for a in self.addrs]
        stubs = [event_service_pb2_grpc.EventServiceStub(c) for c in channels]
        n = 0
        try:
            while True:
                stub = stubs[n % len(stubs)]
                batch = [_event(n * self.per_batch + i) for i in range(self.per_batch)]
                n += 1
                try:
                    reply = await stub.PublishEvents(
                        event_service_pb2.PublishEventsRequest(events=batch), timeout=5
                    )
                    self.acked.extend(e.id for e in reply.events)
                except grpc.aio.AioRpcError as exc:
                    key = exc.code().name
                    self.failures[key] = self.failures.get(key, 0) + 1
                await asyncio.sleep(self.pause)
        finally:
            for channel in channels:
                await channel.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _event(n: int) -> event_pb2.ListenerEvent:
    event = event_pb2.ListenerEvent(source="chaos", event_time=timestamp_pb2.Timestamp(seconds=n))
    event.task_fail.task_code = n
    event.task_fail.task_name = f"task-{n}"
    return event


@dataclass
class Outcome:
    backend: str
    seconds: float
    acked: int
    disruptions: dict[str, int]
    reports: list[InstanceReport]
    publish_failures: dict[str, int]
    deliverers: dict[int, str]
    # Each server's exit status after SIGTERM at the end: 0, a graceful stop after the chaos.
    stops: dict[str, int | None]

    @property
    def ok(self) -> bool:
        delivered = all(
            r.lost == 0 and r.out_of_order == 0 and r.overlaps == 0 for r in self.reports
        )
        return delivered and all(status == 0 for status in self.stops.values())

    def text(self) -> str:
        lines = [
            f"{self.backend}: {self.seconds:.0f} s, {self.acked} acknowledged events, "
            f"disruptions {self.disruptions}, failed publishes {self.publish_failures}"
        ]
        lines += ["  " + r.line() for r in self.reports]
        for r in self.reports:
            lines += [f"    {example}" for example in r.overlap_examples]
        totals = {
            k: sum(getattr(r, k) for r in self.reports)
            for k in ("lost", "out_of_order", "duplicates", "overlaps")
        }
        lines.append(f"  exit statuses after SIGTERM: {self.stops}")
        lines.append(f"  total: {totals} -> {'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)


@contextlib.asynccontextmanager
async def _database(backend: str, workdir: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / 'listener.db'}"
        return
    import asyncpg

    host, _, port = PG.rpartition(":")
    name = f"chaos_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(host=host, port=int(port), user="postgres", database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgresql+asyncpg://postgres@{host}:{port}/{name}"
    finally:
        admin = await asyncpg.connect(
            host=host, port=int(port), user="postgres", database="postgres"
        )
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def run_backend(
    backend: str, duration: float, lease_ttl: float = 2.0, workdir: Path | None = None
) -> Outcome:
    """One chaos run on ``backend`` ("postgresql" or "sqlite") for about ``duration`` s, and
    at least one of each of its disruptions."""
    with tempfile.TemporaryDirectory(prefix=f"chaos-{backend}-") as tmp:
        work = workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        async with _database(backend, work) as url:
            return await _run(backend, url, duration, lease_ttl, work)


async def _run(backend: str, url: str, duration: float, ttl: float, work: Path) -> Outcome:
    cluster = await build_cluster(backend, url, ttl, work)
    outs = {f"i{n}": work / f"out{n}.jsonl" for n in range(INSTANCES)}
    publisher = Publisher(cluster.api_addrs())
    started = time.monotonic()
    try:
        for name in cluster.alerts + cluster.apis:
            await cluster.servers[name].start()
        await _set_up(cluster.servers[cluster.apis[0]].addr, outs)
        publisher.start()
        await _until(lambda: all(len(read_lines(o)) > 20 for o in outs.values()), 60)
        _say(f"{backend}: servers up, events flowing; chaos for {duration:.0f} s")
        disruptions = await _disrupt(backend, cluster, duration, ttl)
        await _recover(backend, cluster, publisher, outs)
        reports = [check(i, read_lines(o), publisher.acked) for i, o in outs.items()]
        deliverers = {pid: s.name for s in cluster.servers.values() for pid in s.pids}
        await publisher.stop()
        stops = await cluster.close()
        return Outcome(
            backend,
            time.monotonic() - started,
            len(publisher.acked),
            disruptions,
            reports,
            publisher.failures,
            deliverers,
            stops,
        )
    finally:
        await publisher.stop()
        await cluster.close()


async def _disrupt(backend: str, cluster: Cluster, duration: float, ttl: float) -> dict[str, int]:
    """The disruptions in turn for ``duration`` s; how many of each kind were done."""
    disruptions: dict[str, int] = {}
    scenarios = _scenarios(cluster, ttl)
    end = time.monotonic() + duration
    turn = 0
    # Every kind of disruption at least once, however slowly a loaded machine restarts
    # servers: a short run is judged by the kinds it survived, not by the clock.
    while time.monotonic() < end or turn < len(scenarios):
        label, action = scenarios[turn % len(scenarios)]
        turn += 1
        _say(f"{backend}: {label}")
        await action()
        disruptions[label] = disruptions.get(label, 0) + 1
        await asyncio.sleep(random.uniform(1.0, 2.0))
    return disruptions


async def _recover(
    backend: str, cluster: Cluster, publisher: Publisher, outs: dict[str, Path]
) -> None:
    """Store back, every server up, 100 more events acknowledged, the publisher stopped, and
    every acknowledged event at every instance (or 180 s passed: the check says what is lost)."""
    for proxy in cluster.proxies.values():
        await proxy.restore()
    for server in cluster.servers.values():
        if not server.alive():
            await server.start()
    mark = len(publisher.acked)
    await _until(lambda: len(publisher.acked) >= mark + 100, 60)
    await publisher.stop()
    _say(f"{backend}: chaos over; waiting for every acknowledged event to arrive")
    acked = set(publisher.acked)
    with contextlib.suppress(TimeoutError):
        await _until(
            lambda: all({x["id"] for x in read_lines(o)} >= acked for o in outs.values()),
            180,
        )


async def _set_up(api: str, outs: dict[str, Path]) -> None:
    async with grpc.aio.insecure_channel(api) as channel:
        plugins = plugin_pb2_grpc.PluginServiceStub(channel)
        instances = listener_instance_pb2_grpc.ListenerInstanceServiceStub(channel)
        await plugins.CreatePlugin(plugin_pb2.CreatePluginRequest(package=witness_package()))
        for iid, out in outs.items():
            await instances.CreateListenerInstance(
                listener_instance_pb2.CreateListenerInstanceRequest(
                    listener_instance_id=iid,
                    listener_instance=listener_instance_pb2.ListenerInstance(
                        plugin="plugins/witness",
                        params={"logFile": str(out)},
                        event_types=[TASK_FAIL],
                    ),
                )
            )


Action = Callable[[], Coroutine[Any, Any, None]]


def _scenarios(cluster: Cluster, ttl: float) -> list[tuple[str, Action]]:
    servers, proxies, alerts, apis = cluster.servers, cluster.proxies, cluster.alerts, cluster.apis

    async def kill(names: list[str]) -> None:
        server = servers[random.choice(names)]
        server.kill9()
        await asyncio.sleep(random.uniform(0.3, 1.5))
        await server.start()

    async def cut(names: list[str], seconds: float) -> None:
        for name in names:
            await proxies[name].cut()
        await asyncio.sleep(seconds)
        for name in names:
            await proxies[name].restore()

    kills: list[tuple[str, Action]] = [
        ("kill -9 an alert server", lambda: kill(alerts)),
        ("kill -9 an API server", lambda: kill(apis)),
    ]
    if not cluster.pg:
        return kills
    everyone = alerts + apis
    return [
        ("database cut off from one alert server", lambda: cut([random.choice(alerts)], ttl * 2)),
        kills[0],
        ("database cut off from every server", lambda: cut(everyone, ttl * 0.6)),
        kills[1],
        ("store outage longer than the lease", lambda: cut(everyone, ttl * 2.5)),
    ]


async def _until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.2)
