"""Issue #19's scenarios beside the first ten: 1b (``api_workers = 2`` beside one process),
5b (latency at 10,000 events/s in batches of 10), 8b (10,000 idle instances) and 12 (what
the HTTP/JSON gateway and console cost the gRPC publish path; the issue calls it 11, a
number the bench already gives the filter scenario).

Each takes the shared :class:`bench.scenarios.Bench` and adds its rows to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import statistics
import time
from collections.abc import Awaitable, Callable

from bench import plugin
from bench.client import Admin, gather_limited
from bench.load import PUBLISH_EVENTS, LoadSpec
from bench.procs import CpuMeter, Servers, cpu_seconds, free_port, rss_mb, tree_cpu_seconds
from bench.rounds import alternated, quartiles
from bench.scenarios import Bench, Row, sample_event
from listener.v1 import event_service_pb2

BATCH = 10
#: One measurement of a configuration: calls/s and calls per API-server CPU-second.
Figures = tuple[float, float]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def latency_batches(bench: Bench) -> None:
    """5b: publish-ack -> handler with ``latency_batch_rate`` events/s in batches of 10."""
    s = bench.sizes
    body = event_service_pb2.PublishEventsRequest(
        events=[sample_event()] * BATCH
    ).SerializeToString()
    async with bench.pair("latency-batches") as (servers, admin, _):
        await admin.install(plugin.package())
        rep = bench.report("latency-batches-0")
        await admin.create_instance(
            "latency-batches-0", "bench", {"reportFile": str(rep.path), "detail": "1"}
        )
        await admin.wait_instances(["latency-batches-0"])
        paced, info = await bench.measured(
            servers,
            LoadSpec(
                servers.api_addr,
                PUBLISH_EVENTS,
                body,
                BATCH,
                concurrency=512,
                duration=s.latency_seconds,
                rate=s.latency_batch_rate / BATCH,
                record=True,
            ),
        )
        await bench.settle([rep], paced.max_sequence)
        handled = {seq: b.time for b in rep.batches for seq in b.sequences}
        lat = [max(0.0, handled[q] - t) * 1000 for q, t in paced.acks if q in handled]
        p99 = _pct(lat, 0.99)
        info.update(
            events=len(paced.acks),
            delivered=len(lat),
            p50_ms=round(_pct(lat, 0.5), 2),
            max_ms=round(max(lat, default=0.0), 2),
            mean_ms=round(statistics.fmean(lat), 2) if lat else 0.0,
            achieved_events_per_s=round(paced.events_per_s),
            echo_rtt_p99_ms=round(bench.limits["echo_rtt_p99_ms"], 2),
        )
        bench.add(
            Row(
                "5b",
                f"latency publish-ack -> handler at {s.latency_batch_rate:,.0f} events/s "
                f"in batches of {BATCH} (p99)",
                p99,
                "ms",
                "p99 <= 10 ms",
                p99 <= 10 and len(lat) == len(paced.acks),
                "echo_rtt_p99_ms",
                bench.limits["echo_rtt_p99_ms"],
                info,
            )
        )


async def scale_large(bench: Bench) -> None:
    """8b: ``large_idle_instances`` idle instances over ``idle_plugins`` plugins: CPU and RSS
    of the alert server, and its restart until every instance runs again."""
    s = bench.sizes
    async with bench.pair("scale-large") as (servers, admin, _):
        plugin_ids = [f"idle-{k:03d}" for k in range(s.idle_plugins)]
        await gather_limited(
            [functools.partial(admin.install, plugin.package(name=p)) for p in plugin_ids], 4
        )
        ids = [f"idle-{k:05d}" for k in range(s.large_idle_instances)]
        started = time.perf_counter()
        await gather_limited(
            [
                functools.partial(admin.create_instance, i, plugin_ids[k % len(plugin_ids)])
                for k, i in enumerate(ids)
            ],
            16,
        )
        await admin.wait_instances(ids, timeout=max(s.timeout, 600))
        create_seconds = time.perf_counter() - started

        servers.stop_one("alert_server")
        started = time.perf_counter()
        serving = await servers.start("alert_server")
        await admin.wait_instances(ids, timeout=max(s.timeout, 600))
        ready = time.perf_counter() - started

        pid = servers.pid("alert_server")
        await asyncio.sleep(min(2.0, s.idle_seconds))
        meter = CpuMeter(pid)
        await asyncio.sleep(s.idle_seconds)
        cpu, rss = meter.percent(), rss_mb(pid)
        bench.add(
            Row(
                "8b",
                f"{len(ids):,} idle instances (CPU)",
                cpu,
                "% core",
                "<= 2 % of a core, RSS <= 600 MB, start <= 5 s",
                cpu <= 2 and rss <= 600 and ready <= 5,
                details={
                    "rss_mb": round(rss, 1),
                    "start_s": round(ready, 2),
                    "health_serving_s": round(serving, 3),
                    "instances": len(ids),
                    "plugins": len(plugin_ids),
                    "create_instances_seconds": round(create_seconds, 2),
                    "sampled_seconds": s.idle_seconds,
                },
            )
        )


async def gateway_cost(bench: Bench) -> None:
    """12 (#19's 11): PublishEvent with 64 callers against an API server with the HTTP/JSON
    gateway and console on (unused) and one with them off, alternated on the same box;
    the ratios of calls/s and of calls per API-server CPU-second, on / off."""
    s = bench.sizes
    on_env = {"LISTENER_HTTP_ADDR": f"127.0.0.1:{free_port()}"}
    async with contextlib.AsyncExitStack() as stack:
        pairs = {
            "off": await stack.enter_async_context(bench.pair("gateway-off")),
            "on": await stack.enter_async_context(bench.pair("gateway-on", env=on_env)),
        }
        measure = _calls_per_cpu(bench, pairs, cpu_seconds)
        figures = await alternated(list(pairs), measure, s.overhead_rounds, warmup=True)
    bench.add(
        _ratio_row(
            "12",
            "PublishEvent with the HTTP gateway and console on vs off (calls per API CPU-s)",
            figures,
            ">= 0.97",
            0.97,
        )
    )


async def api_workers(bench: Bench) -> None:
    """1b: PublishEvent, 64 callers over 16 connections, against ``api_workers = 2`` and
    against one process, alternated; the ratio of calls per API-server CPU-second (all its
    processes) says whether a second process costs efficiency, calls/s whether it scales on
    this box (two cores shared with the database and the load generator)."""
    s = bench.sizes
    workers = s.api_workers
    async with contextlib.AsyncExitStack() as stack:
        pairs = {
            "one": await stack.enter_async_context(bench.pair("workers-1")),
            "many": await stack.enter_async_context(
                bench.pair(f"workers-{workers}", env={"LISTENER_API_WORKERS": str(workers)})
            ),
        }
        measure = _calls_per_cpu(bench, pairs, tree_cpu_seconds, channels=16)
        figures = await alternated(list(pairs), measure, s.overhead_rounds, warmup=True)
    bench.add(
        _ratio_row(
            "1b",
            f"PublishEvent, api_workers = {workers} vs 1 (calls per API CPU-s)",
            figures,
            ">= 0.9",
            0.9,
        )
    )


def _calls_per_cpu(
    bench: Bench,
    pairs: dict[str, tuple[Servers, Admin, float]],
    cpu: Callable[[int], float],
    **load: int,
) -> Callable[[str, int], Awaitable[Figures]]:
    """Measures one pair under target 1's load: calls/s, and calls per second of the API
    server's CPU as ``cpu`` reads it (its process, or all its workers), warm-up included."""
    s = bench.sizes

    async def measure(name: str, _round: int) -> Figures:
        servers = pairs[name][0]
        pid = servers.pid("api_server")
        cpu0 = cpu(pid)
        result = await bench.run_load(
            bench.publish_one(
                servers, concurrency=s.callers, duration=s.duration, warmup=s.warmup, **load
            )
        )
        return result.calls_per_s, result.calls / max(cpu(pid) - cpu0, 1e-9)

    return measure


def _ratio_row(
    key: str, label: str, figures: dict[str, list[Figures]], target: str, bar: float
) -> Row:
    """The second configuration over the first: the median of the rounds' own ratios (each
    round's two runs are next to each other in time, so a drift of the box's load cancels
    in them), of calls per API CPU-second as the figure and of calls/s beside it."""
    (base, base_runs), (other, other_runs) = figures.items()
    per_round = [(o[0] / b[0], o[1] / b[1]) for b, o in zip(base_runs, other_runs, strict=True)]
    per_cpu = statistics.median(r[1] for r in per_round)
    medians = {
        f"{name}_{what}": statistics.median(run[i] for run in runs)
        for name, runs in figures.items()
        for i, what in enumerate(("calls_per_s", "calls_per_cpu_s"))
    }
    return Row(
        key,
        label,
        per_cpu,
        "ratio",
        target,
        per_cpu >= bar,
        details={
            "calls_per_s_ratio": round(statistics.median(r[0] for r in per_round), 3),
            "round_ratios_calls_per_cpu_s": [round(r[1], 3) for r in per_round],
            # the figure's resolution: half the rounds' ratios fall between these two
            "round_ratios_quartiles": quartiles([r[1] for r in per_round]),
            "ratio_of_medians_calls_per_cpu_s": round(
                medians[f"{other}_calls_per_cpu_s"] / medians[f"{base}_calls_per_cpu_s"], 3
            ),
            **{k: round(v) for k, v in medians.items()},
            "rounds": {k: [[round(a), round(b)] for a, b in v] for k, v in figures.items()},
        },
    )
