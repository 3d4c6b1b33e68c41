"""Backoff, the park policy, dead letters, replay, skip, pause and test events, through the API."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import grpc
import pytest

from listener.v1 import event_service_pb2
from listener.v1 import listener_instance_pb2 as li_pb2
from tests.delivery.helpers import create_instance, get_instance, install
from tests.support.databases import database
from tests.support.jsonl import read_jsonl
from tests.support.samples import event_type, flaky_package, sample_event
from tests.support.servers import eventually, running_pair

PARK = li_pb2.FailurePolicy(mode=li_pb2.FailurePolicy.MODE_PARK, park_after=3)


def task_event(n: int, name: str | None = None):  # type: ignore[no-untyped-def]
    event = sample_event("task_fail", n)
    if name:
        event.task_fail.task_name = name
    return event


async def publish(pair, events):  # type: ignore[no-untyped-def]
    reply = await pair.clients.events.PublishEvents(
        event_service_pb2.PublishEventsRequest(events=events)
    )
    return [e.id for e in reply.events]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_failing_plugin_is_retried_on_the_backoff_schedule(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="alert_server.delivery")
    async with (
        database(backend, tmp_path) as url,
        running_pair(url, tmp_path, retry_base=0.2, retry_max=1.0) as pair,
    ):
        await install(pair.clients, flaky_package())
        out = tmp_path / "out.jsonl"
        await create_instance(
            pair.clients,
            "flaky",
            "plugins/flaky",
            {"logFile": str(out), "failCount": "5"},
            ["TASK_FAIL"],
        )
        [first] = await publish(pair, [task_event(1)])

        blocked = await eventually(lambda: _blocked(pair, "flaky"))
        assert blocked.state == li_pb2.ListenerInstance.STATE_BLOCKED
        assert "planned failure" in blocked.delivery.last_error
        assert blocked.delivery.next_attempt_time.seconds > 0

        lines = await eventually(lambda: read_jsonl(out))
        assert [x["id"] for x in lines] == [first]
        attempts = read_jsonl(Path(str(out) + ".attempts"))
        assert len(attempts) == 6 and {a["id"] for a in attempts} == {first}
        # The schedule is the delays the runner chose (its log carries each one), not the
        # measured gaps, which a loaded machine only lengthens: base 0.2 s doubling, full
        # jitter, capped at 1 s, so at most 0.2, 0.4, 0.8, 1, 1; and no retry comes before
        # its delay is over.
        planned = [
            float(r.args[3])  # type: ignore[index]
            for r in caplog.records
            if r.name == "alert_server.delivery" and "next attempt in" in r.msg
        ]
        highs = [0.2, 0.4, 0.8, 1.0, 1.0]
        assert len(planned) == len(highs), planned
        for delay, high in zip(planned, highs, strict=True):
            assert 0 <= delay <= high, planned
        gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(attempts)]
        for gap, delay in zip(gaps, planned, strict=True):
            assert gap >= delay - 0.005, (gaps, planned)  # the clock's resolution, no more
        # The cursor is written by the progress writer just after the plugin returned.
        done = await eventually(lambda: _active(pair, "flaky"))
        assert done.state == li_pb2.ListenerInstance.STATE_ACTIVE
        assert done.delivery.attempts == 0 and not done.delivery.last_error
        history = list(done.delivery.recent_attempts)
        assert not history[0].error and history[0].event_id == first
        assert "planned failure 5 of 5" in history[1].error


async def _active(pair, instance_id):  # type: ignore[no-untyped-def]
    inst = await get_instance(pair.clients, instance_id)
    return inst if inst.state == li_pb2.ListenerInstance.STATE_ACTIVE else None


async def _blocked(pair, instance_id):  # type: ignore[no-untyped-def]
    inst = await get_instance(pair.clients, instance_id)
    return inst if inst.delivery.attempts >= 2 else None


async def test_park_policy_skip_replay_redeliver_pause_and_test_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_pair(
        f"sqlite+aiosqlite:///{tmp_path}/db.sqlite", tmp_path, retry_base=0.05, retry_max=0.1
    ) as pair:
        await install(pair.clients, flaky_package())
        out = tmp_path / "out.jsonl"
        await create_instance(
            pair.clients,
            "parky",
            "plugins/flaky",
            {"logFile": str(out), "failTasks": "poison"},
            ["TASK_FAIL"],
            PARK,
        )
        ids = await publish(pair, [task_event(1), task_event(2, "poison"), task_event(3)])

        # The poison event is parked after 3 attempts and the later one still flows.
        lines = await eventually(lambda: (got := read_jsonl(out)) and len(got) >= 2 and got)
        assert [x["id"] for x in lines] == [ids[0], ids[2]]
        parked = await pair.clients.instances.ListParkedEvents(
            li_pb2.ListParkedEventsRequest(parent="listenerInstances/parky")
        )
        [item] = parked.parked_events
        assert item.event.id == ids[1] and item.attempts == 3
        assert "always fails" in item.last_error
        assert item.event.task_fail.task_name == "poison"
        await eventually(lambda: _pending(pair, "parky", 0))
        inst = await get_instance(pair.clients, "parky")
        assert inst.delivery.parked_count == 1 and inst.delivery.pending_count == 0

        # A sequence that is not parked: NOT_FOUND naming it, and nothing is queued.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await pair.clients.instances.RedeliverParkedEvents(
                li_pb2.RedeliverParkedEventsRequest(
                    parent="listenerInstances/parky", sequences=[item.event.sequence, 99999]
                )
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "sequence 99999" in (err.value.details() or "")
        # Redelivered while the plugin still fails: it stays parked, and a warning says why.
        with caplog.at_level(logging.WARNING, logger="alert_server.delivery"):
            redo = await pair.clients.instances.RedeliverParkedEvents(
                li_pb2.RedeliverParkedEventsRequest(
                    parent="listenerInstances/parky", sequences=[item.event.sequence]
                )
            )
            assert redo.count == 1
            await eventually(lambda: "stays parked" in caplog.text)
        assert ids[1] in caplog.text and "always fails" in caplog.text

        async def recorded_again() -> list[tuple[str, int]] | None:
            got = await pair.clients.instances.ListParkedEvents(
                li_pb2.ListParkedEventsRequest(parent="listenerInstances/parky")
            )
            found = [(p.event.id, p.attempts) for p in got.parked_events]
            return None if found == [(ids[1], 3)] else found  # written after the warning

        assert await eventually(recorded_again) == [(ids[1], 4)]

        # Redelivery after the "fix": the event leaves the dead-letter list.
        await pair.clients.instances.UpdateListenerInstance(
            li_pb2.UpdateListenerInstanceRequest(
                listener_instance=li_pb2.ListenerInstance(
                    name="listenerInstances/parky", params={"logFile": str(out), "failTasks": ""}
                ),
                update_mask={"paths": ["params"]},
            )
        )
        redo = await pair.clients.instances.RedeliverParkedEvents(
            li_pb2.RedeliverParkedEventsRequest(parent="listenerInstances/parky")
        )
        assert redo.count == 1
        await eventually(lambda: len(read_jsonl(out)) == 3)
        assert read_jsonl(out)[-1]["id"] == ids[1]
        await eventually(lambda: _parked_count(pair, "parky", 0))

        # Replay from the first sequence delivers all three again, in order.
        first_seq = read_jsonl(out)[0]["sequence"]
        await pair.clients.instances.ReplayListenerInstance(
            li_pb2.ReplayListenerInstanceRequest(
                name="listenerInstances/parky", from_sequence=first_seq
            )
        )
        await eventually(lambda: len(read_jsonl(out)) == 6)
        assert [x["id"] for x in read_jsonl(out)[3:]] == ids

        # Pause: events queue up; resume: they flow.
        paused = await pair.clients.instances.PauseListenerInstance(
            li_pb2.PauseListenerInstanceRequest(name="listenerInstances/parky")
        )
        assert paused.state == li_pb2.ListenerInstance.STATE_PAUSED
        more = await publish(pair, [task_event(4)])
        await eventually(lambda: _pending(pair, "parky", 1))
        assert len(read_jsonl(out)) == 6
        await pair.clients.instances.ResumeListenerInstance(
            li_pb2.ResumeListenerInstanceRequest(name="listenerInstances/parky")
        )
        await eventually(lambda: len(read_jsonl(out)) == 7)
        assert read_jsonl(out)[-1]["id"] == more[0]

        # A test event reaches the plugin now and is not stored.
        reply = await pair.clients.instances.SendTestEvent(
            li_pb2.SendTestEventRequest(
                name="listenerInstances/parky", event_type=event_type("TASK_FAIL")
            )
        )
        assert reply.delivered and not reply.error
        assert read_jsonl(out)[-1]["source"] == "listener-test"


async def test_skip_and_retry_now_on_a_blocked_instance(tmp_path: Path) -> None:
    async with running_pair(
        f"sqlite+aiosqlite:///{tmp_path}/db.sqlite", tmp_path, retry_base=30.0, retry_max=60.0
    ) as pair:
        await install(pair.clients, flaky_package())
        out = tmp_path / "out.jsonl"
        await create_instance(
            pair.clients,
            "stuck",
            "plugins/flaky",
            {"logFile": str(out), "failTasks": "poison"},
            ["TASK_FAIL"],
        )
        ids = await publish(pair, [task_event(1, "poison"), task_event(2)])
        blocked = await eventually(lambda: _attempts(pair, "stuck", 1))
        assert blocked.state == li_pb2.ListenerInstance.STATE_BLOCKED
        assert read_jsonl(out) == []

        # Retry now runs the attempt at once instead of in 15-30 s.
        await pair.clients.instances.RetryListenerInstance(
            li_pb2.RetryListenerInstanceRequest(name="listenerInstances/stuck")
        )
        await eventually(lambda: _attempts(pair, "stuck", 2))

        skipped = await pair.clients.instances.SkipListenerInstanceEvent(
            li_pb2.SkipListenerInstanceEventRequest(name="listenerInstances/stuck")
        )
        assert skipped.delivery.parked_count == 1
        await eventually(lambda: [x["id"] for x in read_jsonl(out)] == [ids[1]])

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await pair.clients.instances.SkipListenerInstanceEvent(
                li_pb2.SkipListenerInstanceEventRequest(name="listenerInstances/stuck")
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def _attempts(pair, instance_id, n):  # type: ignore[no-untyped-def]
    inst = await get_instance(pair.clients, instance_id)
    return inst if inst.delivery.attempts >= n else None


async def _parked_count(pair, instance_id, n):  # type: ignore[no-untyped-def]
    return (await get_instance(pair.clients, instance_id)).delivery.parked_count == n


async def _pending(pair, instance_id, n):  # type: ignore[no-untyped-def]
    return (await get_instance(pair.clients, instance_id)).delivery.pending_count == n
