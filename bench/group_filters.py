"""Scenario 11: deliveries with a content filter on each of 20 instances vs none."""

from __future__ import annotations

import functools
import statistics
from typing import Any

from bench import plugin
from bench.client import Admin, gather_limited
from bench.procs import Servers
from bench.rounds import alternated, quartiles
from bench.scenarios import SCENARIOS, Bench, Row, sample_event
from listener.v1 import event_service_pb2


async def filters(b: Bench) -> None:
    """Deliveries with 20 instances each holding a filter against 20 without, on one
    server pair (store -> plugins drain, and publish-while-delivering for the publish
    rate). The filters select every event, so the ratio is their cost alone. Events
    differ in the fields read (500 task and workflow names, repeating as a scheduler's
    do); 11a reads ``event.sequence`` too, so every event is new to every filter.

    Plain and filtered alternate in ``filter_rounds`` rounds whose order flips (P F, F P,
    ...), and 11 and 11b are the medians of the rounds' own ratios: run once each in a
    fixed order, 11b read 1.28 and 0.72 in two runs of the same tree."""
    s = b.sizes
    varied = event_service_pb2.PublishEventsRequest(
        events=[sample_event(n) for n in range(s.batch)]
    ).SerializeToString()
    async with b.pair("filters") as (servers, admin, _):
        await admin.install(plugin.package())
        run = functools.partial(_run, b, servers, admin, varied=varied)
        rounds = await alternated(["plain", "filtered"], run, s.filter_rounds)
        distinct = await run("distinct", 0)
    info = _details(b, rounds, distinct)
    plain_drain = statistics.median(run[0] for run in rounds["plain"])
    for key, measure, ratio, bar in (
        ("11", SCENARIOS["11"], statistics.median(info["round_ratios_deliveries"]), 0.7),
        (
            "11a",
            "the same, every event new to every filter (worst case)",
            distinct[0] / max(plain_drain, 1e-9),
            None,
        ),
        (
            "11b",
            "publish rate while 20 filtered instances deliver vs unfiltered",
            statistics.median(info["round_ratios_publish"]),
            0.9,
        ),
    ):
        target = f">= {bar}" if bar is not None else ""
        met = ratio >= bar if bar is not None else None
        b.add(Row(key, measure, ratio, "ratio", target, met, details=info))


#: One run of a kind of instances: drain deliveries/s and details, mixed deliveries/s and details.
Run = tuple[float, dict[str, Any], float, dict[str, Any]]


def _publish(run: Run) -> float:
    return float(run[3]["publish_events_per_s"])


def _details(b: Bench, rounds: dict[str, list[Run]], distinct: Run) -> dict[str, Any]:
    """Every run's figures, and the rounds' own ratios of filtered to plain."""
    s = b.sizes
    pairs = list(zip(rounds["plain"], rounds["filtered"], strict=True))
    info: dict[str, Any] = {
        "instances": s.fanout_instances,
        "filter": bench_filter(0, ""),
        "rounds": s.filter_rounds,
        "round_ratios_deliveries": [round(f[0] / max(p[0], 1e-9), 3) for p, f in pairs],
        "round_ratios_publish": [round(_publish(f) / max(_publish(p), 1), 3) for p, f in pairs],
    }
    info["round_ratios_deliveries_quartiles"] = quartiles(info["round_ratios_deliveries"])
    info["round_ratios_publish_quartiles"] = quartiles(info["round_ratios_publish"])
    for label, runs in [*rounds.items(), ("distinct", [distinct])]:
        info[label] = [
            {
                "drain_deliveries_per_s": round(drain),
                "mixed_deliveries_per_s": round(mixed),
                "publish_events_per_s": mixed_info["publish_events_per_s"],
                "drain": drain_info,
            }
            for drain, drain_info, mixed, mixed_info in runs
        ]
    return info


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
    b: Bench, servers: Servers, admin: Admin, label: str, round_: int, *, varied: bytes
) -> Run:
    """One kind of instances (plain, filtered, distinct): created, drained, mixed, deleted."""
    s = b.sizes
    ids = [f"{label}{round_}-{i}" for i in range(s.fanout_instances)]
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
