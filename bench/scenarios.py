"""The targets of the performance issue and what their scenarios share: sizes, rows, the
sample event, and :class:`Bench` (one run's state: limits, rows, server pairs, loads).

Scenarios that need the same setup share one server pair (a *group*, ``bench.groups``: one
module each); every group starts from a fresh database so no figure depends on what ran
before it. A row is one measured figure with its target and, where one exists, the physical
limit it is a ratio to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2

from bench.client import Admin, gather_limited
from bench.limits import echo_limits, postgres_limits, sqlite_limits
from bench.load import PUBLISH_EVENT, PUBLISH_EVENTS, LoadResult, LoadSpec
from bench.procs import CpuMeter, Servers, database, us_per
from bench.reports import Report, wait_reaching
from listener.v1 import event_pb2, event_service_pb2


@dataclass(frozen=True)
class Sizes:
    """How big each scenario runs: FULL for the figures, QUICK to check it all still runs."""

    duration: float = 3.0  # seconds of each closed-loop publish measurement
    warmup: float = 0.5
    callers: int = 64  # target 1
    batch: int = 500  # target 2
    batch_callers: int = 4
    drain_events: int = 100_000  # target 3
    fanout_instances: int = 20  # target 4
    fanout_events: int = 25_000
    latency_rate: float = 1000.0  # target 5
    latency_seconds: float = 5.0
    latency_batch_rate: float = 10_000.0  # target 5b, events/s in batches of 10
    many_instances: int = 100  # target 6
    swap_rate: float = 2000.0  # target 7
    swap_seconds: float = 3.0
    idle_plugins: int = 100  # targets 8 and 10
    idle_instances: int = 1000
    idle_seconds: float = 10.0
    large_idle_instances: int = 10_000  # target 8b
    overhead_rounds: int = 10  # targets 1b and 12: alternated, even so each goes first as often
    filter_rounds: int = 6  # target 11: plain and filtered alternated, likewise
    api_workers: int = 2  # target 1b
    cycles: int = 500  # target 9
    cycle_warmup: int = 20
    sqlite_rows: int = 200_000
    sqlite_commits: int = 5_000
    timeout: float = 120.0  # longest wait for deliveries to finish


SWAP_BATCH = 10
FULL = Sizes()
QUICK = Sizes(
    duration=0.3,
    warmup=0.1,
    drain_events=1_000,
    fanout_instances=3,
    fanout_events=500,
    latency_seconds=0.5,
    many_instances=3,
    swap_rate=500.0,
    swap_seconds=1.0,
    idle_plugins=2,
    idle_instances=6,
    idle_seconds=0.5,
    latency_batch_rate=500.0,
    large_idle_instances=12,
    overhead_rounds=1,
    filter_rounds=1,
    cycles=3,
    cycle_warmup=1,
    sqlite_rows=5_000,
    sqlite_commits=200,
    timeout=30.0,
)


@dataclass
class Row:
    """One figure. ``met`` is None for figures that have no target of their own."""

    key: str
    measure: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    limit_name: str = ""
    limit: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.value / self.limit if self.limit else None


SCENARIOS = {
    "1": "PublishEvent (durable ack), 64 concurrent callers",
    "2": "PublishEvents, batches of 500",
    "3": "publish -> plugin, one instance, sustained",
    "4": "deliveries with 20 instances subscribed to everything",
    "5": "latency publish-ack -> handler at 1,000 events/s",
    "6": "publish rate with 100 instances vs with 1",
    "7": "hot swap under 2,000 events/s",
    "8": "1,000 idle instances",
    "9": "500 install/uninstall cycles",
    "10": "alert server start with 100 plugins and 1,000 instances",
    "11": "deliveries with a filter on each of 20 instances vs none",
    # Issue #19 calls this one 11; the bench's 11 was taken by the filter scenario.
    "12": "PublishEvent with the HTTP gateway and console on vs off",
}


def sample_event(n: int = 1) -> event_pb2.ListenerEvent:
    """A typical published event: a task failure, as a scheduler reports it."""
    ts = timestamp_pb2.Timestamp(seconds=1_700_000_000 + n)
    return event_pb2.ListenerEvent(
        event_time=ts,
        source="master-1:5678",
        task_fail=event_pb2.TaskRun(
            project_code=77,
            project_name="etl",
            owner="alice",
            workflow_instance_id=9000 + n,
            workflow_definition_code=1000 + n,
            workflow_name=f"nightly-{n}",
            task_instance_id=70000 + n,
            task_code=5000 + n,
            task_name=f"extract-{n}",
            task_type="SHELL",
            task_state="FAILURE",
            start_time=ts,
            end_time=ts,
            host="worker-1:1234",
            log_path=f"/var/log/ds/{n}.log",
        ),
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Bench:
    """Shared state of one run: sizes, database choice, load worker, limits, rows."""

    def __init__(
        self,
        sizes: Sizes,
        db: str,
        workdir: Path,
        run_load: Callable[[LoadSpec], Coroutine[Any, Any, LoadResult]],
    ) -> None:
        self.sizes = sizes
        self.db = db
        self.workdir = workdir
        self.run_load = run_load
        self.limits: dict[str, float] = {}
        self.rows: list[Row] = []
        self.stages: dict[str, Any] = {}  # scenario 5's latency by stage (bench/stages.py)
        event = sample_event()
        self.single = event_service_pb2.PublishEventRequest(event=event).SerializeToString()
        self.batch = event_service_pb2.PublishEventsRequest(
            events=[event] * sizes.batch
        ).SerializeToString()
        self.body = event.SerializeToString()
        # Hot swap (7) publishes in batches of 10, so the event rate holds even where single
        # publishes cannot reach it (that is target 1's business, not the swap's).
        self.small_batch = event_service_pb2.PublishEventsRequest(
            events=[event] * SWAP_BATCH
        ).SerializeToString()

    # -- helpers --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def pair(
        self, name: str, trace: bool = False, env: dict[str, str] | None = None
    ) -> AsyncIterator[tuple[Servers, Admin, float]]:
        """A fresh database and server pair; yields them and the alert server's start time.
        With ``trace`` the servers note per-stage timestamps under ``<workdir>/stages``;
        ``env`` adds to (or overrides) the servers' ``LISTENER_*`` settings."""
        workdir = self.workdir / name
        async with database(self.db, workdir) as url:
            servers = Servers(
                url, workdir, trace_dir=workdir / "stages" if trace else None, env_extra=env or {}
            )
            admin: Admin | None = None
            try:
                started = await servers.start_both()
                admin = Admin(servers.api_addr, servers.alert_addr)
                yield servers, admin, started
            finally:
                if admin is not None:
                    await admin.close()
                servers.stop()

    def report(self, name: str) -> Report:
        path = self.workdir / "reports" / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        return Report(path)

    def publish_one(self, servers: Servers, **kw: Any) -> LoadSpec:
        return LoadSpec(servers.api_addr, PUBLISH_EVENT, self.single, 1, **kw)

    def publish_batch(self, servers: Servers, body: bytes | None = None, **kw: Any) -> LoadSpec:
        kw.setdefault("concurrency", self.sizes.batch_callers)
        return LoadSpec(
            servers.api_addr, PUBLISH_EVENTS, body or self.batch, self.sizes.batch, **kw
        )

    async def measured(self, servers: Servers, spec: LoadSpec) -> tuple[LoadResult, dict[str, Any]]:
        """Runs a load, noting each server's CPU share (of one core) meanwhile, and its CPU
        microseconds per acked event (warm-up included, as the CPU is: the figure to compare
        before and after a change, far steadier than latency on a shared box)."""
        notified = await asyncio.to_thread(servers.notifies)
        meters = {w: CpuMeter(servers.pid(w)) for w in ("api_server", "alert_server")}
        result = await self.run_load(spec)
        info: dict[str, Any] = {f"{w}_cpu_pct": round(m.percent(), 1) for w, m in meters.items()}
        for w, m in meters.items():
            info[f"{w}_cpu_us_per_event"] = round(us_per(m.seconds(), result.acked_events), 1)
        main = meters["api_server"].main_thread_seconds()
        info["api_server_main_thread_us_per_event"] = round(us_per(main, result.acked_events), 1)
        # How grouped the load was: fewer nudges (Notify calls, stream messages) per event,
        # less CPU per event.
        notifies = await asyncio.to_thread(servers.notifies) - notified
        info["notifies_per_event"] = (
            round(notifies / result.acked_events, 3) if result.acked_events else 0.0
        )
        info["load_generator_cpu_pct"] = round(result.cpu_pct, 1)
        info["rtt_p50_ms"] = round(result.rtt(0.5), 2)
        info["rtt_p99_ms"] = round(result.rtt(0.99), 2)
        info["slowest_call_ms"] = round(result.slowest_ms, 1)
        if result.late:
            info["calls_completed_after_window"] = result.late
        if result.errors:
            info["errors"] = result.errors
            info["error_sample"] = result.error_sample
        return result, info

    async def settle(self, reports: list[Report], sequence: int) -> None:
        """Lets delivery catch up before the next measurement (bounded)."""
        await wait_reaching(reports, sequence, self.sizes.timeout)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    # -- the machine ----------------------------------------------------------------------

    async def machine_limits(self) -> None:
        s = self.sizes
        figures = await echo_limits(
            self.run_load,
            self.single,
            self.batch,
            s.batch,
            callers=s.callers,
            batch_callers=s.batch_callers,
            duration=s.duration,
            warmup=s.warmup,
            rate=s.latency_rate,
        )
        self.limits.update(
            echo_calls_per_s=figures.single_calls_per_s,
            echo_batch_events_per_s=figures.batch_events_per_s,
            echo_rtt_p50_ms=figures.rtt_p50_ms,
            echo_rtt_p99_ms=figures.rtt_p99_ms,
            echo_paced_cpu_us_per_call=figures.paced_cpu_us_per_call,
            echo_main_thread_us_per_call=figures.main_thread_us_per_call,
        )
        raw = await asyncio.to_thread(
            sqlite_limits,
            self.workdir / "raw.sqlite",
            self.body,
            s.sqlite_rows,
            s.sqlite_commits,
            s.batch,
        )
        self.limits.update(
            sqlite_commits_per_s=raw.commits_per_s,
            sqlite_insert_rows_per_s=raw.insert_rows_per_s,
            sqlite_read_rows_per_s=raw.read_rows_per_s,
            sqlite_uuid4_insert_rows_per_s=raw.uuid4_insert_rows_per_s,
        )
        if self.db != "sqlite":
            async with database(self.db, self.workdir / "raw-pg") as url:
                pg = await postgres_limits(url, self.body, s.sqlite_rows // 4, s.batch)
            self.limits.update(
                pg_commits_per_s=pg.commits_per_s,
                pg_insert_rows_per_s=pg.insert_rows_per_s,
                pg_read_rows_per_s=pg.read_rows_per_s,
            )

    @property
    def insert_limit(self) -> tuple[str, float]:
        name = "sqlite_insert_rows_per_s" if self.db == "sqlite" else "pg_insert_rows_per_s"
        return name, self.limits.get(name, 0.0)

    @property
    def read_limit(self) -> tuple[str, float]:
        name = "sqlite_read_rows_per_s" if self.db == "sqlite" else "pg_read_rows_per_s"
        return name, self.limits.get(name, 0.0)

    async def drain(
        self,
        servers: Servers,
        admin: Admin,
        ids: list[str],
        reports: list[Report],
        events: int,
        body: bytes | None = None,
    ) -> tuple[float, dict[str, Any]]:
        """Pre-publishes ``events`` with the instances paused, resumes them and times until
        all delivered: the store -> plugin rate alone. Returns deliveries/s."""
        await gather_limited([functools.partial(admin.pause, i) for i in ids], 8)
        await admin.wait_instances(ids, "PAUSED")
        calls = max(1, events // self.sizes.batch)
        pre = await self.run_load(self.publish_batch(servers, body, calls=calls))
        meter = CpuMeter(servers.pid("alert_server"))
        resumed = time.time()
        await gather_limited([functools.partial(admin.resume, i) for i in ids], 8)
        done = await wait_reaching(reports, pre.max_sequence, self.sizes.timeout)
        delivered = sum(r.delivered_since(resumed) for r in reports)
        end = max((r.batches[-1].time for r in reports if r.batches), default=time.time())
        if not done:
            end = time.time()
        elapsed = max(end - resumed, 1e-9)
        return delivered / elapsed, {
            "events": pre.events,
            "deliveries": delivered,
            "seconds": round(elapsed, 3),
            "complete": done,
            "alert_server_cpu_pct": round(meter.percent(), 1),
        }

    async def mixed(
        self, servers: Servers, reports: list[Report], events: int, body: bytes | None = None
    ) -> tuple[float, dict[str, Any]]:
        """Publishes ``events`` as fast as it can while the instances deliver; times from the
        first publish to the last delivery. Returns deliveries/s."""
        calls = max(1, events // self.sizes.batch)
        result, info = await self.measured(servers, self.publish_batch(servers, body, calls=calls))
        done = await wait_reaching(reports, result.max_sequence, self.sizes.timeout)
        ends = [r.time_reaching(result.max_sequence) for r in reports]
        end = max((e for e in ends if e is not None), default=time.time())
        if not done:
            end = time.time()
        delivered = sum(r.delivered_since(result.started) for r in reports)
        elapsed = max(end - result.started, 1e-9)
        info.update(
            events=result.events,
            deliveries=delivered,
            seconds=round(elapsed, 3),
            publish_events_per_s=round(result.events_per_s),
            complete=done,
        )
        return delivered / elapsed, info
