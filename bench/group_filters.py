"""Scenario 11: deliveries with a content filter on each of 20 instances vs none."""

from __future__ import annotations

import functools
from typing import Any

from bench import plugin
from bench.client import Admin, gather_limited
from bench.procs import Servers
from bench.scenarios import SCENARIOS, Bench, Row, sample_event
from listener.v1 import event_service_pb2


async def filters(b: Bench) -> None:
    """Deliveries with 20 instances each holding a filter against 20 without, on one
    server pair (store -> plugins drain, and publish-while-delivering for the publish
    rate). The filters select every event, so the ratio is their cost alone. Events
    differ in the fields read (500 task and workflow names, repeating as a scheduler's
    do); 11a reads ``event.sequence`` too, so every event is new to every filter."""
    s = b.sizes
    varied = event_service_pb2.PublishEventsRequest(
        events=[sample_event(n) for n in range(s.batch)]
    ).SerializeToString()
    runs: dict[str, tuple[float, dict[str, Any], float, dict[str, Any]]] = {}
    async with b.pair("filters") as (servers, admin, _):
        await admin.install(plugin.package())
        for label in ("plain", "filtered", "distinct"):
            runs[label] = await _run(b, servers, admin, label, varied)
    plain = runs["plain"]
    publish = plain[3]["publish_events_per_s"]
    info: dict[str, Any] = {"instances": s.fanout_instances, "filter": bench_filter(0, "")}
    for label, (drain, drain_info, mixed, mixed_info) in runs.items():
        info[label] = {
            "drain_deliveries_per_s": round(drain),
            "mixed_deliveries_per_s": round(mixed),
            "publish_events_per_s": mixed_info["publish_events_per_s"],
            "drain": drain_info,
        }
    for key, label, measure in (
        ("11", "filtered", SCENARIOS["11"]),
        ("11a", "distinct", "the same, every event new to every filter (worst case)"),
    ):
        ratio = runs[label][0] / max(plain[0], 1e-9)
        target = ">= 0.7" if key == "11" else ""
        b.add(
            Row(
                key,
                measure,
                ratio,
                "ratio",
                target,
                ratio >= 0.7 if target else None,
                details=info,
            )
        )
    publish_ratio = runs["filtered"][3]["publish_events_per_s"] / max(publish, 1)
    b.add(
        Row(
            "11b",
            "publish rate while 20 filtered instances deliver vs unfiltered",
            publish_ratio,
            "ratio",
            ">= 0.9",
            publish_ratio >= 0.9,
            details=info,
        )
    )


def bench_filter(n: int, label: str) -> str:
    """A content filter that reads three fields of the bench's events and selects them all
    (so a filtered run delivers as much as an unfiltered one); each instance's differs.
    "distinct" also reads the sequence, unique to each event."""
    text = (
        'event.task_fail.project_name == "etl" && event.task_fail.task_name.startsWith('
        f'"extract") && event.task_fail.workflow_name != "wf-{n}"'
    )
    return f"{text} && event.sequence > 0" if label == "distinct" else text


async def _run(
    b: Bench, servers: Servers, admin: Admin, label: str, varied: bytes
) -> tuple[float, dict[str, Any], float, dict[str, Any]]:
    """One kind of instances (plain, filtered, distinct): created, drained, mixed, deleted."""
    s = b.sizes
    ids = [f"{label}-{i}" for i in range(s.fanout_instances)]
    reports = [b.report(i) for i in ids]
    await gather_limited(
        [
            functools.partial(
                admin.create_instance,
                i,
                "bench",
                {"reportFile": str(r.path)},
                filter="" if label == "plain" else bench_filter(n, label),
            )
            for n, (i, r) in enumerate(zip(ids, reports, strict=True))
        ],
        8,
    )
    await admin.wait_instances(ids)
    drain, drain_info = await b.drain(servers, admin, ids, reports, s.fanout_events, varied)
    mixed, mixed_info = await b.mixed(servers, reports, s.fanout_events, varied)
    await gather_limited([functools.partial(admin.delete_instance, i) for i in ids], 8)
    return drain, drain_info, mixed, mixed_info
