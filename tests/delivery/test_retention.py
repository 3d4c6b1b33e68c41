"""Retention: events every instance passed are purged (parked ones kept); replay then
says which events are gone."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from event_store import retention
from event_store.models import Event
from listener.v1 import event_service_pb2
from listener.v1 import listener_instance_pb2 as li_pb2
from tests.delivery.helpers import create_instance, install
from tests.support.jsonl import read_jsonl
from tests.support.samples import flaky_package, logger_package, sample_event
from tests.support.servers import eventually, recorded, running_pair


async def test_purge_keeps_undelivered_and_parked_events(tmp_path: Path) -> None:
    # Cursor writes spaced 0.5 s apart widen the moment between a plugin's file and its
    # recorded cursor, which a loaded machine opens by chance.
    async with running_pair(
        f"sqlite+aiosqlite:///{tmp_path}/db.sqlite",
        tmp_path,
        retry_base=0.05,
        retry_max=0.1,
        progress_interval=0.5,
    ) as pair:
        c = pair.clients
        await install(c, logger_package())
        await install(c, flaky_package())
        fast, slow = tmp_path / "fast.jsonl", tmp_path / "slow.jsonl"
        await create_instance(c, "fast", "plugins/logger", {"logFile": str(fast)}, ["TASK_FAIL"])
        await create_instance(
            c,
            "parky",
            "plugins/flaky",
            {"logFile": str(slow), "failTasks": "poison"},
            ["TASK_FAIL"],
            li_pb2.FailurePolicy(mode=li_pb2.FailurePolicy.MODE_PARK, park_after=1),
        )
        poison = sample_event("task_fail", 1)
        poison.task_fail.task_name = "poison"
        batch = [poison] + [sample_event("task_fail", n) for n in range(2, 11)]
        reply = await c.events.PublishEvents(event_service_pb2.PublishEventsRequest(events=batch))
        await eventually(lambda: len(read_jsonl(fast)) == 10 and len(read_jsonl(slow)) == 9)
        # Purge goes by the recorded cursors, which the progress writer records a moment
        # after the plugins wrote their files: wait for those, not for the files.
        last = reply.events[-1].sequence
        await recorded(c, "fast", last)
        await recorded(c, "parky", last)

        # Pause one instance with events pending: they must survive the purge.
        await c.instances.PauseListenerInstance(
            li_pb2.PauseListenerInstanceRequest(name="listenerInstances/fast")
        )
        later = await c.events.PublishEvents(
            event_service_pb2.PublishEventsRequest(
                events=[sample_event("task_fail", n) for n in range(11, 14)]
            )
        )

        purged = await retention.purge(pair.alert.store, retention_seconds=0)
        assert purged == 9  # the ten delivered by both, less the parked one
        async with pair.alert.store.reader() as session:
            left = set((await session.execute(select(Event.id))).scalars().all())
            assert await session.scalar(select(func.count()).select_from(Event)) == 4
        assert left == {reply.events[0].id} | {e.id for e in later.events}

        await c.instances.ResumeListenerInstance(
            li_pb2.ResumeListenerInstanceRequest(name="listenerInstances/fast")
        )
        await eventually(lambda: len(read_jsonl(fast)) == 13)

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.instances.ReplayListenerInstance(
                li_pb2.ReplayListenerInstanceRequest(
                    name="listenerInstances/fast", from_sequence=reply.events[1].sequence
                )
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "purged" in (err.value.details() or "")
