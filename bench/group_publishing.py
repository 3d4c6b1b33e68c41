"""Scenarios 1, 2 and 6: publishing, one call per event, in batches, and with 100 instances."""

from __future__ import annotations

import functools

from bench import plugin
from bench.client import Admin, gather_limited
from bench.procs import Servers
from bench.reports import Report
from bench.scenarios import SCENARIOS, Bench, Row


async def publishing(b: Bench) -> None:
    s = b.sizes
    async with b.pair("publish") as (servers, admin, _):
        await admin.install(plugin.package())
        main = b.report("publish-0")
        await admin.create_instance("publish-0", "bench", {"reportFile": str(main.path)})

        one, info = await b.measured(
            servers,
            b.publish_one(servers, concurrency=s.callers, duration=s.duration, warmup=s.warmup),
        )
        b.add(
            Row(
                "1",
                SCENARIOS["1"],
                one.calls_per_s,
                "calls/s",
                ">= 0.7 x echo",
                one.calls_per_s >= 0.7 * b.limits["echo_calls_per_s"],
                "echo_calls_per_s",
                b.limits["echo_calls_per_s"],
                {**info, "sqlite_commits_per_s": round(b.limits["sqlite_commits_per_s"])},
            )
        )
        await b.settle([main], one.max_sequence)

        batch, info = await b.measured(
            servers, b.publish_batch(servers, duration=s.duration, warmup=s.warmup)
        )
        goal = 50_000 if b.db == "sqlite" else 30_000
        name, limit = b.insert_limit
        info["echo_batch_events_per_s"] = round(b.limits["echo_batch_events_per_s"])
        b.add(
            Row(
                "2",
                SCENARIOS["2"],
                batch.events_per_s,
                "events/s",
                f">= {goal:,}",
                batch.events_per_s >= goal,
                name,
                limit,
                info,
            )
        )
        await b.settle([main], batch.max_sequence)

        await _many_instances(b, servers, admin, main)


async def _many_instances(b: Bench, servers: Servers, admin: Admin, main: Report) -> None:
    """6: the same publish measured again with 1 instance, then with 100."""
    s = b.sizes
    # 6: the same publish measured again with 1 instance, then with 100.
    base, base_info = await b.measured(
        servers, b.publish_batch(servers, duration=s.duration, warmup=s.warmup)
    )
    await b.settle([main], base.max_sequence)
    extra = [f"publish-{i}" for i in range(1, s.many_instances)]
    await gather_limited([functools.partial(admin.create_instance, i, "bench") for i in extra], 8)
    await admin.wait_instances(["publish-0", *extra])
    many, many_info = await b.measured(
        servers, b.publish_batch(servers, duration=s.duration, warmup=s.warmup)
    )
    ratio = many.events_per_s / base.events_per_s if base.events_per_s else 0.0
    b.add(
        Row(
            "6",
            SCENARIOS["6"],
            ratio,
            "x",
            ">= 0.8",
            ratio >= 0.8,
            details={
                "events_per_s_1_instance": round(base.events_per_s),
                "events_per_s_many_instances": round(many.events_per_s),
                "instances": s.many_instances,
                "with_1": base_info,
                "with_many": many_info,
            },
        )
    )
