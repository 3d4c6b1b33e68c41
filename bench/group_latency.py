"""Scenarios 5 and 7: latency publish-ack -> handler, and a hot swap under load."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from typing import Any

from bench import plugin, stages
from bench.client import Admin
from bench.load import PUBLISH_EVENTS, LoadResult, LoadSpec
from bench.procs import Servers
from bench.reports import Report
from bench.scenarios import SCENARIOS, SWAP_BATCH, Bench, Row, percentile


async def latency_and_swap(b: Bench) -> None:
    s = b.sizes
    async with b.pair("latency", trace=True) as (servers, admin, _):
        await admin.install(plugin.package())
        rep = b.report("latency-0")
        await admin.create_instance(
            "latency-0", "bench", {"reportFile": str(rep.path), "detail": "1"}
        )
        await admin.wait_instances(["latency-0"])

        paced, info = await b.measured(
            servers,
            b.publish_one(
                servers,
                concurrency=512,
                duration=s.latency_seconds,
                rate=s.latency_rate,
                record=True,
            ),
        )
        await b.settle([rep], paced.max_sequence)
        handled = {seq: batch.time for batch in rep.batches for seq in batch.sequences}
        acks = dict(paced.acks)
        assert servers.trace_dir is not None
        trace = await asyncio.to_thread(stages.read_traces, servers.trace_dir)
        window = (paced.started, time.time())
        names = {str(servers.pid(w)): w for w in ("api_server", "alert_server")}
        b.stages = stages.breakdown(trace, acks, handled, window, names)
        lat = [max(0.0, handled[seq] - acked) * 1000 for seq, acked in paced.acks if seq in handled]
        p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
        info.update(
            events=len(paced.acks),
            delivered=len(lat),
            p99_ms=round(p99, 2),
            max_ms=round(max(lat, default=0.0), 2),
            mean_ms=round(statistics.fmean(lat), 2) if lat else 0.0,
            achieved_rate=round(paced.calls_per_s),
            echo_rtt_p99_ms=round(b.limits["echo_rtt_p99_ms"], 2),
        )
        b.add(
            Row(
                "5",
                SCENARIOS["5"] + " (p50)",
                p50,
                "ms",
                "p50 <= 5 ms, p99 <= 25 ms",
                p50 <= 5 and p99 <= 25 and len(lat) == len(paced.acks),
                "echo_rtt_p50_ms",
                b.limits["echo_rtt_p50_ms"],
                info,
            )
        )

        await _swap(b, servers, admin, rep)


def _swap_row(bench: Bench, batches: list[Any], load: LoadResult, swap_seconds: float) -> None:
    acked = {seq for seq, _ in load.acks}
    seen: set[int] = set()
    highest = reordered = duplicates = 0
    for b in batches:
        for seq in b.sequences:
            if seq in seen:
                duplicates += 1
            elif seq < highest:
                reordered += 1
            seen.add(seq)
            highest = max(highest, seq)
    lost = len(acked - seen)
    times = [load.started] + [b.time for b in batches]
    gap = max((b - a for a, b in itertools.pairwise(times)), default=0.0) * 1000
    versions = list(dict.fromkeys(b.version for b in batches))
    swap_gap = 0.0
    if len(versions) > 1:
        last_old = max(b.time for b in batches if b.version == versions[0])
        first_new = min(b.time for b in batches if b.version == versions[-1])
        swap_gap = (first_new - last_old) * 1000
    handled = {seq: b.time for b in batches for seq in b.sequences}
    lat = [(handled[s] - t) * 1000 for s, t in load.acks if s in handled]
    met = lost == 0 and reordered == 0 and gap <= 250 and versions[-1:] == ["2.0.0"]
    bench.add(
        Row(
            "7",
            SCENARIOS["7"] + " (longest gap)",
            gap,
            "ms",
            "0 lost, 0 reordered, gap <= 250 ms",
            met,
            details={
                "published": len(acked),
                "lost": lost,
                "reordered": reordered,
                "duplicates": duplicates,
                "versions": versions,
                "gap_at_swap_ms": round(swap_gap, 2),
                "update_plugin_seconds": round(swap_seconds, 3),
                "max_latency_ms": round(max(lat, default=0.0), 2),
                "p99_latency_ms": round(percentile(lat, 0.99), 2),
                "achieved_events_per_s": round(load.events_per_s),
                "publish_batch": SWAP_BATCH,
                "errors": load.errors,
            },
        )
    )


async def _swap(b: Bench, servers: Servers, admin: Admin, rep: Report) -> None:
    """7: a hot swap to version 2.0.0 while 2,000 events/s are published."""
    s = b.sizes
    start = len(rep.batches)
    load = asyncio.create_task(
        b.run_load(
            LoadSpec(
                servers.api_addr,
                PUBLISH_EVENTS,
                b.small_batch,
                SWAP_BATCH,
                concurrency=512,
                duration=s.swap_seconds,
                rate=s.swap_rate / SWAP_BATCH,
                record=True,
            )
        )
    )
    await asyncio.sleep(s.swap_seconds / 3)
    swap_started = time.perf_counter()
    await admin.update("bench", plugin.package(version="2.0.0"))
    swap_seconds = time.perf_counter() - swap_started
    swapped = await load
    await b.settle([rep], swapped.max_sequence)
    _swap_row(b, rep.batches[start:], swapped, swap_seconds)
