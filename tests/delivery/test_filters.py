"""Content filters (DESIGN §13): checked at create/update, applied on the delivery side.

Expected deliveries are computed here with the CEL library itself, over the event as
``json_format`` renders it (proto field names, defaults included), not through the servers'
own conversion, so a wrong view of the event would show up as a mismatch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cel
import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from listener.v1 import event_pb2, event_service_pb2
from listener.v1 import listener_instance_pb2 as li_pb2
from tests.delivery.helpers import get_instance, install
from tests.support.databases import database
from tests.support.jsonl import read_jsonl
from tests.support.samples import event_type, flaky_package, sample_event
from tests.support.servers import eventually, running_pair

TYPES = ["TASK_FAIL", "TASK_START", "WORKFLOW_FAIL", "WORKFLOW_START", "TASK_UPDATE"]
BLOCK = li_pb2.FailurePolicy(mode=li_pb2.FailurePolicy.MODE_BLOCK)
PARK = li_pb2.FailurePolicy(mode=li_pb2.FailurePolicy.MODE_PARK, park_after=2)


def _request(iid: str, out: Path, types: list[str], filter_text: str, policy: Any = None) -> Any:
    return li_pb2.CreateListenerInstanceRequest(
        listener_instance_id=iid,
        listener_instance=li_pb2.ListenerInstance(
            plugin="plugins/flaky",
            params={"logFile": str(out)},
            event_types=[event_type(t) for t in types],
            failure_policy=policy,
            filter=filter_text,
        ),
    )


async def _publish(pair: Any, events: list[event_pb2.ListenerEvent]) -> list[Any]:
    reply = await pair.clients.events.PublishEvents(
        event_service_pb2.PublishEventsRequest(events=events)
    )
    return list(reply.events)


def _violations(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, "every error carries a google.rpc.Status"
    found = []
    for detail in status_pb2.Status.FromString(raw).details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [(v.field, v.description) for v in bad.field_violations]
    return found


async def _update_filter(pair: Any, iid: str, text: str) -> li_pb2.ListenerInstance:
    return await pair.clients.instances.UpdateListenerInstance(
        li_pb2.UpdateListenerInstanceRequest(
            listener_instance=li_pb2.ListenerInstance(name=f"listenerInstances/{iid}", filter=text),
            update_mask={"paths": ["filter"]},
        )
    )


async def test_bad_filters_are_invalid_argument_naming_position_and_reason(
    tmp_path: Path,
) -> None:
    async with running_pair(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite", tmp_path) as pair:
        await install(pair.clients, flaky_package())
        out = tmp_path / "out.jsonl"
        cases = {
            "event.task_fail.project_name ==": ("line 1, column 32", "Syntax error"),
            'event.task_fail.project_nme == "etl"': ("line 1, column 17", "no field 'project_nme'"),
            'event.task_fial.project_name == "etl"': ("line 1, column 7", "no field 'task_fial'"),
            "project == 'etl'": ("line 1, column 1", "undeclared reference to 'project'"),
            "event.source": ("must yield a bool", "str"),
            "event.source + 1 == 2": ("type error", "string + int"),
            "lower(event.source) == 'x'": ("line 1, column 1", "unknown function 'lower'"),
        }
        for text, words in cases.items():
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pair.clients.instances.CreateListenerInstance(
                    _request("bad", out, ["TASK_FAIL"], text)
                )
            err = caught.value
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (text, err.details())
            [(field, description)] = _violations(err)
            assert field == "listener_instance.filter"
            for word in words:
                assert word in description and word in (err.details() or ""), (text, description)
        listed = await pair.clients.instances.ListListenerInstances(
            li_pb2.ListListenerInstancesRequest()
        )
        assert not listed.listener_instances  # nothing was created

        # A good one is kept as given; a bad update leaves it unchanged.
        good = 'has(event.task_fail) && event.task_fail.task_name.startsWith("extract")'
        made = await pair.clients.instances.CreateListenerInstance(
            _request("good", out, ["TASK_FAIL", "WORKFLOW_FAIL"], good)
        )
        assert made.filter == good
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _update_filter(pair, "good", "event.nope == 1")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (await get_instance(pair.clients, "good")).filter == good
        # The mask names filter, sent empty: cleared.
        await _update_filter(pair, "good", "")
        cleared = await get_instance(pair.clients, "good")
        assert cleared.filter == ""


def _mixed_stream(n: int) -> list[event_pb2.ListenerEvent]:
    events = []
    for i in range(n):
        kind = ["task_fail", "task_start", "workflow_fail", "workflow_start", "task_update"][i % 5]
        event = sample_event(kind, i)
        event.source = f"master-{i % 3}"
        payload = getattr(event, kind)
        payload.project_name = f"p{i % 7}"
        if kind.startswith("task_") and kind != "task_update":
            payload.task_name = f"t{i % 4}-{i}"
            payload.host = f"worker-{i % 2}" if i % 3 else ""
        if kind == "task_update":
            payload.worker_group = f"g{i % 3}"
            payload.name = f"t{i % 4}-{i}"
        if kind.startswith("workflow_"):
            payload.workflow_name = f"wf-{i % 6}"
        events.append(event)
    return events


def _filters(count: int) -> list[str]:
    shapes = [
        'has(event.task_fail) && event.task_fail.project_name == "p{a}"',
        'event.type == 13 && event.task_fail.task_name.startsWith("t{b}")',
        'has(event.workflow_fail) && event.workflow_fail.workflow_name == "wf-{c}"',
        'has(event.task_update) && event.task_update.worker_group == "g{d}"',
        'event.source.endsWith("{d}") && event.type != {t}',
        '(has(event.task_start) ? event.task_start.host : "") == "worker-{e}"',
        "has(event.workflow_start) || (has(event.task_fail) && event.task_fail.project_name"
        ' in ["p{a}", "p{b}"])',
        "event.sequence % {m} == 0",
        'event.type in [5, 7] && event.source != "master-{d}"',
        "!has(event.task_update) && event.sequence % {m} == 1",
        # has() on a string: set when not empty (CEL's proto3 semantics)
        "has(event.task_start) && has(event.task_start.host) && event.sequence % {m} != {e}",
    ]
    out = []
    for i in range(count):
        j = i // len(shapes)
        shape = shapes[i % len(shapes)]
        text = shape.format(
            a=(i + 2 * j) % 7,
            b=(i + 2 * j) % 4,
            c=(i + 2 * j) % 6,
            d=(i + 2 * j) % 3,
            e=(i + 2 * j) % 2,
            t=[5, 7, 9, 11, 13][j % 5],
            m=2 + j,
        )
        # The later ones also leave out the first events, each a different number of them.
        out.append(text if j < 3 else f"({text}) && event.sequence > {{first}} + {j * 3}")
    return out


def _selects(text: str, stored: event_pb2.ListenerEvent) -> bool:
    # has() on a field without presence is true when it is not its default: the rendering
    # without defaults, for the filters that ask it (and read no field that may be default).
    view = json_format.MessageToDict(
        stored,
        preserving_proto_field_name=True,
        use_integers_for_enums=True,
        always_print_fields_with_no_presence="has(event.task_start.host)" not in text,
    )
    view["sequence"] = int(view["sequence"])  # int64 comes as text in JSON
    for payload in view.values():
        if isinstance(payload, dict):
            for key, value in payload.items():
                if key.endswith(("_code", "_id")) and isinstance(value, str):
                    payload[key] = int(value)
    result = cel.compile(text).execute({"event": view})
    assert isinstance(result, bool)
    return result


async def test_hundred_instances_each_receive_what_their_filter_selects(tmp_path: Path) -> None:
    async with running_pair(
        f"sqlite+aiosqlite:///{tmp_path}/db.sqlite", tmp_path, delivery_batch=7
    ) as pair:
        await install(pair.clients, flaky_package())
        # The stream's first sequence, for filters that leave out its first events.
        [marker] = await _publish(pair, [sample_event("server_down")])
        texts = [t.replace("{first}", str(marker.sequence)) for t in _filters(100)]
        assert len(set(texts)) >= 95, "different filters"
        for i, text in enumerate(texts):
            await pair.clients.instances.CreateListenerInstance(
                _request(f"f{i:03d}", tmp_path / f"f{i:03d}.jsonl", TYPES, text)
            )
        published: list[event_pb2.ListenerEvent] = []
        stream = _mixed_stream(80)
        for start in range(0, len(stream), 20):
            sent = stream[start : start + 20]
            for event, stored in zip(sent, await _publish(pair, sent), strict=True):
                event.id, event.sequence = stored.id, stored.sequence
                event.type = event_type(event.WhichOneof("payload").upper())
                published.append(event)
        assert len(published) == 80
        expected = {
            i: [e.id for e in published if _selects(text, e)] for i, text in enumerate(texts)
        }
        assert sum(1 for ids in expected.values() if ids) > 80
        assert any(0 < len(ids) < 80 for ids in expected.values())

        async def settled() -> bool:
            listed = await pair.clients.instances.ListListenerInstances(
                li_pb2.ListListenerInstancesRequest(page_size=200)
            )
            return all(
                inst.delivery.pending_count == 0
                and inst.delivery.filtered_count == 80 - len(expected[int(inst.name[-3:])])
                for inst in listed.listener_instances
            )

        await eventually(settled, timeout=240, interval=0.5)
        for i in range(100):
            got = [x["id"] for x in read_jsonl(tmp_path / f"f{i:03d}.jsonl")]
            assert got == expected[i], (i, texts[i])
        attempts = (await get_instance(pair.clients, "f000")).delivery
        assert attempts.last_error == "" and attempts.attempts == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_filter_failing_on_an_event_blocks_and_a_change_unblocks(
    backend: str, tmp_path: Path
) -> None:
    async with (
        database(backend, tmp_path) as url,
        running_pair(url, tmp_path, retry_base=0.1, retry_max=0.3) as pair,
    ):
        await install(pair.clients, flaky_package())
        out = tmp_path / "out.jsonl"
        await pair.clients.instances.CreateListenerInstance(
            _request(
                "strict",
                out,
                ["TASK_FAIL", "WORKFLOW_FAIL"],
                'event.task_fail.project_name == "etl"',
                BLOCK,
            )
        )
        ids = [
            e.id
            for e in await _publish(
                pair,
                [
                    sample_event("task_fail", 1),
                    sample_event("workflow_fail", 2),
                    sample_event("task_fail", 3),
                ],
            )
        ]

        async def blocked() -> Any:
            inst = await get_instance(pair.clients, "strict")
            return inst if inst.delivery.attempts >= 3 else None

        inst = await eventually(blocked)
        assert inst.state == li_pb2.ListenerInstance.STATE_BLOCKED
        assert "filter failed" in inst.delivery.last_error
        assert "'task_fail'" in inst.delivery.last_error and ids[1] in inst.delivery.last_error
        assert inst.delivery.recent_attempts[0].event_id == ids[1]
        assert "filter failed" in inst.delivery.recent_attempts[0].error
        assert [x["id"] for x in read_jsonl(out)] == [ids[0]]  # never a silent skip

        # A changed filter applies from the next event: the head one, here.
        await _update_filter(pair, "strict", '!has(event.task_fail) || event.task_fail.host == ""')
        await eventually(lambda: len(read_jsonl(out)) == 2)
        assert [x["id"] for x in read_jsonl(out)] == [ids[0], ids[1]]
        done = await eventually(
            lambda: _where(pair, "strict", lambda i: i.delivery.pending_count == 0)
        )
        assert done.state == li_pb2.ListenerInstance.STATE_ACTIVE
        assert done.delivery.filtered_count == 1  # the third: its host is set


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
async def test_a_filter_failing_on_an_event_parks_it_under_the_park_policy(
    backend: str, tmp_path: Path
) -> None:
    async with (
        database(backend, tmp_path) as url,
        running_pair(url, tmp_path, retry_base=0.05, retry_max=0.1) as pair,
    ):
        await install(pair.clients, flaky_package())
        out = tmp_path / "out.jsonl"
        await pair.clients.instances.CreateListenerInstance(
            _request(
                "parky",
                out,
                ["TASK_FAIL", "WORKFLOW_FAIL"],
                'event.task_fail.project_name == "etl"',
                PARK,
            )
        )
        published = await _publish(
            pair,
            [
                sample_event("task_fail", 1),
                sample_event("workflow_fail", 2),
                sample_event("task_fail", 3),
            ],
        )
        ids = [e.id for e in published]
        await eventually(lambda: len(read_jsonl(out)) == 2)
        assert [x["id"] for x in read_jsonl(out)] == [ids[0], ids[2]]
        parked = await pair.clients.instances.ListParkedEvents(
            li_pb2.ListParkedEventsRequest(parent="listenerInstances/parky")
        )
        [item] = parked.parked_events
        assert item.event.id == ids[1] and item.attempts == 2
        assert "filter failed" in item.last_error and "'task_fail'" in item.last_error
        inst = await eventually(
            lambda: _where(pair, "parky", lambda i: i.delivery.pending_count == 0)
        )
        assert inst.delivery.parked_count == 1 and inst.delivery.filtered_count == 0


async def test_a_plugin_failing_inside_a_filtered_batch_keeps_the_counts_exact(
    tmp_path: Path,
) -> None:
    """The plugin fails on a selected event in the middle of a batch: what came before it
    is delivered or counted as filtered, the event is parked, and the rest goes on."""
    async with running_pair(
        f"sqlite+aiosqlite:///{tmp_path}/db.sqlite", tmp_path, retry_base=0.05, retry_max=0.1
    ) as pair:
        await install(pair.clients, flaky_package())
        out = tmp_path / "out.jsonl"
        request = _request(
            "mid", out, ["TASK_FAIL"], 'event.task_fail.project_name != "skip"', PARK
        )
        request.listener_instance.params["failTasks"] = "task-3"
        await pair.clients.instances.CreateListenerInstance(request)
        stream = []
        for n, project in enumerate(["etl", "skip", "etl", "skip", "etl", "skip"], start=1):
            event = sample_event("task_fail", n)
            event.task_fail.project_name = project
            stream.append(event)
        ids = [e.id for e in await _publish(pair, stream)]  # one batch for the runner
        done = await eventually(
            lambda: _where(
                pair, "mid", lambda i: i.delivery.pending_count == 0 and i.delivery.parked_count
            )
        )
        assert [x["id"] for x in read_jsonl(out)] == [ids[0], ids[4]]
        assert done.delivery.filtered_count == 3 and done.delivery.parked_count == 1
        parked = await pair.clients.instances.ListParkedEvents(
            li_pb2.ListParkedEventsRequest(parent="listenerInstances/mid")
        )
        assert [p.event.id for p in parked.parked_events] == [ids[2]]
        assert "task task-3 always fails" in parked.parked_events[0].last_error


async def test_filter_change_mid_stream_and_replay_apply_the_current_filter(
    tmp_path: Path,
) -> None:
    async with running_pair(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite", tmp_path) as pair:
        await install(pair.clients, flaky_package())
        out = tmp_path / "out.jsonl"

        def task(n: int, project: str) -> event_pb2.ListenerEvent:
            event = sample_event("task_fail", n)
            event.task_fail.project_name = project
            return event

        await pair.clients.instances.CreateListenerInstance(
            _request("switch", out, ["TASK_FAIL"], 'event.task_fail.project_name == "a"')
        )
        first = await _publish(pair, [task(1, "a"), task(2, "b"), task(3, "a")])
        await eventually(
            lambda: _where(
                pair,
                "switch",
                lambda i: i.delivery.pending_count == 0 and i.delivery.filtered_count,
            )
        )
        assert [x["id"] for x in read_jsonl(out)] == [first[0].id, first[2].id]

        await _update_filter(pair, "switch", 'event.task_fail.project_name == "b"')
        second = await _publish(pair, [task(4, "a"), task(5, "b"), task(6, "b")])
        await eventually(lambda: len(read_jsonl(out)) == 4)
        done = await eventually(
            lambda: _where(
                pair,
                "switch",
                lambda i: i.delivery.pending_count == 0 and i.delivery.filtered_count == 2,
            )
        )
        assert done.filter == 'event.task_fail.project_name == "b"'
        assert [x["id"] for x in read_jsonl(out)][2:] == [second[1].id, second[2].id]

        # A replay from the start goes through the filter as it is now.
        await pair.clients.instances.ReplayListenerInstance(
            li_pb2.ReplayListenerInstanceRequest(
                name="listenerInstances/switch", from_sequence=first[0].sequence
            )
        )
        await eventually(lambda: len(read_jsonl(out)) == 7)
        assert [x["id"] for x in read_jsonl(out)][4:] == [first[1].id, second[1].id, second[2].id]
        replayed = await eventually(
            lambda: _where(pair, "switch", lambda i: i.delivery.filtered_count == 5)
        )
        assert replayed.delivery.pending_count == 0

        # Cleared, every event of the types flows again.
        await _update_filter(pair, "switch", "")
        third = await _publish(pair, [task(7, "c")])
        await eventually(lambda: len(read_jsonl(out)) == 8)
        assert read_jsonl(out)[-1]["id"] == third[0].id


async def _where(pair: Any, iid: str, check: Any) -> Any:
    inst = await get_instance(pair.clients, iid)
    return inst if check(inst) else None
