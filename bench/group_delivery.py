"""Scenarios 3 and 4: delivery throughput, store -> plugin, to one instance and to 20."""

from __future__ import annotations

import functools
from typing import Any

from bench import plugin
from bench.client import Admin, gather_limited
from bench.procs import Servers
from bench.scenarios import SCENARIOS, Bench, Row


async def delivery(b: Bench) -> None:
    s = b.sizes
    async with b.pair("delivery") as (servers, admin, _):
        await admin.install(plugin.package())
        one = b.report("drain-0")
        await admin.create_instance("drain-0", "bench", {"reportFile": str(one.path)})
        await admin.wait_instances(["drain-0"])
        rate, info = await b.drain(servers, admin, ["drain-0"], [one], s.drain_events)
        _add(b, "3a", "store -> plugin drain, one instance", rate, "events/s", 20_000, info)
        rate, info = await b.mixed(servers, [one], s.drain_events)
        _add(b, "3", SCENARIOS["3"], rate, "events/s", 20_000, info)
        await admin.delete_instance("drain-0")

        await _fanout(b, servers, admin)


async def _fanout(b: Bench, servers: Servers, admin: Admin) -> None:
    """4: the same with 20 instances subscribed to everything."""
    s = b.sizes
    ids = [f"fan-{i}" for i in range(s.fanout_instances)]
    reports = [b.report(i) for i in ids]
    await gather_limited(
        [
            functools.partial(admin.create_instance, i, "bench", {"reportFile": str(r.path)})
            for i, r in zip(ids, reports, strict=True)
        ],
        8,
    )
    await admin.wait_instances(ids)
    rate, info = await b.drain(servers, admin, ids, reports, s.fanout_events)
    info["instances"] = len(ids)
    _add(
        b, "4a", f"store -> plugins drain, {len(ids)} instances", rate, "deliveries/s", 50_000, info
    )
    rate, info = await b.mixed(servers, reports, s.fanout_events)
    info["instances"] = len(ids)
    _add(b, "4", SCENARIOS["4"], rate, "deliveries/s", 50_000, info)


def _add(
    b: Bench, key: str, measure: str, rate: float, unit: str, floor: int, info: dict[str, Any]
) -> None:
    """A throughput row, met at ``floor`` or more, beside the store's raw-read limit."""
    name, limit = b.read_limit
    b.add(Row(key, measure, rate, unit, f">= {floor:,}", rate >= floor, name, limit, info))
