"""Hot swap through UpdatePlugin while events keep coming, and rollback when it cannot work.

The swap loads the new version beside the old, opens new plugin objects for the running
instances, switches between two batches once the batch in flight is done, then closes and
unloads the old version. Under steady publishing none may be lost, reordered, or handled by
two versions; a version that fails to load or to open leaves the old one running untouched.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from event_store.models import Package, Plugin
from listener.v1 import event_service_pb2
from tests.isolation.support import (
    alert_status,
    create_instance,
    get_instance,
    get_plugin,
    install,
    recorder_package,
    sqlite_pair,
    update,
)
from tests.support.jsonl import read_jsonl
from tests.support.samples import sample_event
from tests.support.servers import Clients, Pair, eventually

# 6 events every ~10 ms when alone: 200-500 events/s, depending on the machine.
BURST = 6
PERIOD = 0.005


async def publish_steadily(
    clients: Clients, stop: asyncio.Event, ids: list[str], acked: dict[str, float]
) -> None:
    n = 0
    while not stop.is_set():
        reply = await clients.events.PublishEvents(
            event_service_pb2.PublishEventsRequest(
                events=[sample_event("task_fail", n + i) for i in range(BURST)]
            )
        )
        now = time.monotonic()
        ids.extend(e.id for e in reply.events)
        acked.update((e.id, now) for e in reply.events)
        n += BURST
        await asyncio.sleep(PERIOD)


async def test_swaps_under_steady_publishing_lose_and_reorder_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    async with sqlite_pair(tmp_path) as pair:
        c = pair.clients
        await install(c, recorder_package("1"))
        await create_instance(c, "rec", "recorder", {"logFile": str(out)})
        published: list[str] = []
        acked: dict[str, float] = {}
        stop = asyncio.Event()
        publisher = asyncio.create_task(publish_steadily(c, stop, published, acked))
        started = time.monotonic()
        swap_times: list[tuple[float, float]] = []
        try:
            await asyncio.sleep(0.6)
            for version in ("2", "3", "4", "5"):
                before = time.monotonic()
                plugin = await update(c, "recorder", recorder_package(version))
                swap_times.append((before, time.monotonic()))
                assert plugin.version == version
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await publisher
        rate = len(published) / (time.monotonic() - started)
        lines = await eventually(
            lambda: (got := read_jsonl(out)) and len(got) >= len(published) and got, timeout=30
        )
        status = await alert_status(pair)
        # The old versions are gone from this process.
        assert [p.version for p in status.plugins] == ["5"]
        loaded = {n.split(".")[1] for n in sys.modules if n.startswith("_listener_plugins.rec")}
        assert loaded == {status.plugins[0].module_prefix.split(".")[1]}

    # None lost, none reordered, none handled twice (by one version or by two).
    assert [x["id"] for x in lines] == published
    seqs = [x["seq"] for x in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Each version handled one contiguous run, in the order they were installed.
    runs = [v for i, v in enumerate(x["v"] for x in lines) if i == 0 or lines[i - 1]["v"] != v]
    assert runs == ["1", "2", "3", "4", "5"]

    pairs = list(itertools.pairwise(lines))
    boundary = [b["t"] - a["t"] for a, b in pairs if a["v"] != b["v"]]

    def in_swap(t: float) -> bool:
        return any(s - 0.05 <= t <= e + 0.3 for s, e in swap_times)

    swap_gaps = [b["t"] - a["t"] for a, b in pairs if in_swap(b["t"])]
    latency = [x["t"] - acked[x["id"]] for x in lines]
    swap_latency = [x["t"] - acked[x["id"]] for x in lines if in_swap(x["t"])]
    rpc_ms = [(e - s) * 1000 for s, e in swap_times]
    print(
        f"\n[figures] {len(published)} events at {rate:.0f}/s through 4 swaps "
        f"(UpdatePlugin {min(rpc_ms):.0f}-{max(rpc_ms):.0f} ms). Longest gap between "
        f"consecutive deliveries: across a version switch {max(boundary) * 1000:.1f} ms, "
        f"within 0.3 s of a swap {max(swap_gaps) * 1000:.1f} ms. Longest publish-to-delivery "
        f"latency: during swaps {max(swap_latency) * 1000:.1f} ms, overall "
        f"{max(latency) * 1000:.1f} ms"
    )
    # Sanity: publishing went on across every swap (a rate floor would only measure the load).
    acked_times = sorted(acked.values())
    for s, e in swap_times:
        assert any(t < s for t in acked_times) and any(t > e for t in acked_times)
        assert any(s - 0.5 <= t <= e + 0.5 for t in acked_times), (s, e)
    # How long a swap pauses delivery is printed above and measured by `make bench` (target 7,
    # gap <= 250 ms); a bound here would only measure how loaded the machine is.


async def catalog_state(pair: Pair, plugin_id: str) -> tuple[dict[str, object], set[str]]:
    """Every column of the plugin's row, and the sha256 of every stored package."""
    async with pair.api.store.reader() as session:
        row = await session.get(Plugin, plugin_id)
        assert row is not None
        columns = {c.key: getattr(row, c.key) for c in Plugin.__table__.columns}
        packages = set((await session.execute(select(Package.sha256))).scalars())
    return columns, packages


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("import-error", grpc.StatusCode.INVALID_ARGUMENT),
        ("open-error", grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_a_failed_update_leaves_the_old_version_running(
    tmp_path: Path, mode: str, code: grpc.StatusCode
) -> None:
    out = tmp_path / "out.jsonl"
    async with sqlite_pair(tmp_path) as pair:
        c = pair.clients
        await install(c, recorder_package("1"))
        await create_instance(c, "rec", "recorder", {"logFile": str(out)})
        first = await c.events.PublishEvent(
            event_service_pb2.PublishEventRequest(event=sample_event("task_fail", 1))
        )
        await eventually(lambda: len(read_jsonl(out)) == 1)
        before = await alert_status(pair)
        row_before = await catalog_state(pair, "recorder")

        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await update(c, "recorder", recorder_package("2", mode=mode))
        assert failed.value.code() == code
        detail = failed.value.details() or ""
        assert ("cannot be imported" if mode == "import-error" else "unreachable") in detail

        plugin = await get_plugin(c, "recorder")
        assert plugin.version == "1"
        # The catalog row is exactly as before, and the new version's package is not kept.
        assert await catalog_state(pair, "recorder") == row_before
        after = await alert_status(pair)
        assert [(p.version, p.module_prefix) for p in after.plugins] == [
            (p.version, p.module_prefix) for p in before.plugins
        ]
        assert not [n for n in sys.modules if n.startswith("_listener_plugins.recorder_2_")]
        second = await c.events.PublishEvent(
            event_service_pb2.PublishEventRequest(event=sample_event("task_fail", 2))
        )
        lines = await eventually(lambda: (got := read_jsonl(out)) and len(got) >= 2 and got)
        assert [(x["id"], x["v"]) for x in lines] == [(first.id, "1"), (second.id, "1")]
        inst = await get_instance(c, "rec")
        assert inst.delivery.attempts == 0 and not inst.delivery.last_error
