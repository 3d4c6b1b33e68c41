"""Several publishers on two API servers at once: no instance misses or reorders an event.

This is the test for the classic trap of "read ids greater than my cursor" when publishers
commit out of order: each instance must see exactly the events it subscribed to, in
sequence order, with no gap.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from api_server import app as api_app
from listener.v1 import event_service_pb2, event_service_pb2_grpc
from listener_core.config import Config
from tests.delivery.helpers import create_instance, install
from tests.support.jsonl import read_jsonl
from tests.support.samples import PAYLOAD_FIELDS, logger_package, sample_event
from tests.support.servers import FAST, eventually, running_pair

PUBLISHERS = 4
PER_PUBLISHER = 5_000
BATCH = 50
SUBSCRIPTIONS = {
    "all": [f.upper() for f in PAYLOAD_FIELDS],
    "tasks": ["TASK_START", "TASK_END", "TASK_FAIL"],
    "failures": ["WORKFLOW_FAIL", "TASK_FAIL", "SERVER_DOWN"],
}


async def test_four_publishers_two_api_servers_three_instances(db_url: str, tmp_path: Path) -> None:
    async with running_pair(db_url, tmp_path) as pair:
        second = await api_app.start(
            Config.from_keys(
                db_url=db_url,
                data_dir=str(tmp_path / "api2"),
                api_addr="127.0.0.1:0",
                http_addr="127.0.0.1:0",
                alert_targets=(pair.alert_addr,),
                **FAST,
            )  # type: ignore[arg-type]
        )
        channels = [
            grpc.aio.insecure_channel(pair.api_addr),
            grpc.aio.insecure_channel(f"127.0.0.1:{second.port}"),
        ]
        try:
            await install(pair.clients, logger_package())
            outs = {name: tmp_path / f"{name}.jsonl" for name in SUBSCRIPTIONS}
            for name, types in SUBSCRIPTIONS.items():
                await create_instance(
                    pair.clients, name, "plugins/logger", {"logFile": str(outs[name])}, types
                )

            async def publisher(n: int) -> list[tuple[int, str, str]]:
                stub = event_service_pb2_grpc.EventServiceStub(channels[n % 2])
                sent = []
                for start in range(0, PER_PUBLISHER, BATCH):
                    batch = [
                        sample_event(PAYLOAD_FIELDS[(n + i) % len(PAYLOAD_FIELDS)], i)
                        for i in range(start, start + BATCH)
                    ]
                    reply = await stub.PublishEvents(
                        event_service_pb2.PublishEventsRequest(events=batch)
                    )
                    for event, r in zip(batch, reply.events, strict=True):
                        sent.append((r.sequence, r.id, event.WhichOneof("payload").upper()))
                return sent

            results = await asyncio.gather(*(publisher(n) for n in range(PUBLISHERS)))
            published = sorted(item for result in results for item in result)
            sequences = [s for s, _, _ in published]
            assert len(set(sequences)) == PUBLISHERS * PER_PUBLISHER
            assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))

            for name, types in SUBSCRIPTIONS.items():
                expected = [eid for _, eid, kind in published if kind in types]
                out, count = outs[name], len(expected)
                lines = await eventually(
                    lambda o=out, n=count: (got := read_jsonl(o)) and len(got) >= n and got,
                    timeout=120,
                    interval=0.2,
                )
                got = [x["id"] for x in lines]
                assert got == expected, f"{name}: {len(got)} delivered, {len(expected)} expected"
        finally:
            for channel in channels:
                await channel.close()
            await second.stop(0)
