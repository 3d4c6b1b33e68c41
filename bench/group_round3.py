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

from bench import plugin
from bench.client import gather_limited
from bench.load import PUBLISH_EVENT, PUBLISH_EVENTS, LoadSpec
from bench.procs import CpuMeter, cpu_seconds, free_port, rss_mb, tree_cpu_seconds
from bench.scenarios import Bench, Row, sample_event
from listener.v1 import event_service_pb2

BATCH = 10


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
    figures: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    async with contextlib.AsyncExitStack() as stack:
        pairs = {
            "off": await stack.enter_async_context(bench.pair("gateway-off")),
            "on": await stack.enter_async_context(bench.pair("gateway-on", env=on_env)),
        }
        for round_ in range(s.overhead_rounds + 1):  # the first round warms both up, uncounted
            for name, (servers, _admin, _) in pairs.items():
                cpu0 = cpu_seconds(servers.pid("api_server"))
                result = await bench.run_load(
                    bench.publish_one(
                        servers, concurrency=s.callers, duration=s.duration, warmup=s.warmup
                    )
                )
                cpu = cpu_seconds(servers.pid("api_server")) - cpu0  # warm-up included
                if round_:
                    figures[name].append((result.calls_per_s, result.calls / max(cpu, 1e-9)))
    med = _medians(figures)
    rate = med["on_calls_per_s"] / med["off_calls_per_s"]
    per_cpu = med["on_calls_per_cpu_s"] / med["off_calls_per_cpu_s"]
    bench.add(
        Row(
            "12",
            "PublishEvent with the HTTP gateway and console on vs off (calls per API CPU-s)",
            per_cpu,
            "ratio",
            ">= 0.97",
            per_cpu >= 0.97,
            details={
                "calls_per_s_ratio": round(rate, 3),
                **{k: round(v) for k, v in med.items()},
                "rounds": {k: [[round(a), round(b)] for a, b in v] for k, v in figures.items()},
            },
        )
    )


async def api_workers(bench: Bench) -> None:
    """1b: PublishEvent, 64 callers over 16 connections, against ``api_workers = 2`` and
    against one process, alternated; the ratio of calls per API-server CPU-second (all its
    processes) says whether a second process costs efficiency, calls/s whether it scales on
    this box (two cores shared with the database and the load generator)."""
    s = bench.sizes
    workers = s.api_workers
    figures: dict[str, list[tuple[float, float]]] = {"one": [], "many": []}
    async with contextlib.AsyncExitStack() as stack:
        pairs = {
            "one": await stack.enter_async_context(bench.pair("workers-1")),
            "many": await stack.enter_async_context(
                bench.pair(f"workers-{workers}", env={"LISTENER_API_WORKERS": str(workers)})
            ),
        }
        for round_ in range(s.overhead_rounds + 1):  # the first round warms up, uncounted
            for name, (servers, _admin, _) in pairs.items():
                pid = servers.pid("api_server")
                cpu0 = tree_cpu_seconds(pid)
                result = await bench.run_load(
                    LoadSpec(
                        servers.api_addr,
                        PUBLISH_EVENT,
                        bench.single,
                        1,
                        concurrency=s.callers,
                        duration=s.duration,
                        warmup=s.warmup,
                        channels=16,
                    )
                )
                cpu = tree_cpu_seconds(pid) - cpu0  # warm-up included
                if round_:
                    figures[name].append((result.calls_per_s, result.calls / max(cpu, 1e-9)))
    med = _medians(figures)
    per_cpu = med["many_calls_per_cpu_s"] / med["one_calls_per_cpu_s"]
    bench.add(
        Row(
            "1b",
            f"PublishEvent, api_workers = {workers} vs 1 (calls per API CPU-s)",
            per_cpu,
            "ratio",
            ">= 0.9",
            per_cpu >= 0.9,
            details={
                "calls_per_s_ratio": round(med["many_calls_per_s"] / med["one_calls_per_s"], 3),
                **{k: round(v) for k, v in med.items()},
                "rounds": {k: [[round(a), round(b)] for a, b in v] for k, v in figures.items()},
            },
        )
    )


def _medians(figures: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    return {
        f"{name}_{what}": statistics.median(v[i] for v in runs)
        for name, runs in figures.items()
        for i, what in enumerate(("calls_per_s", "calls_per_cpu_s"))
    }
