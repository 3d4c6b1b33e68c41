"""Every request field is checked before a service runs: lengths, counts, enum values,
timestamps, page tokens, and bytes that are not a message at all. Each refusal is
INVALID_ARGUMENT with a BadRequest naming the field, and the store is left as it was."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from api_server import validation
from api_server.event_service import EventService
from api_server.limits import PublishLimiter
from listener.v1 import (
    event_pb2,
    event_service_pb2,
    listener_instance_pb2,
    plugin_pb2,
)
from tests.security.helpers import bearer, check_consistent, counts, details, event_types
from tests.support.databases import sqlite_url
from tests.support.samples import logger_package, sample_event
from tests.support.servers import Pair, eventually, running_pair

li_pb2 = listener_instance_pb2
es_pb2 = event_service_pb2


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    async with running_pair(sqlite_url(tmp_path), tmp_path) as p:
        await p.clients.plugins.CreatePlugin(
            plugin_pb2.CreatePluginRequest(package=logger_package())
        )
        await p.clients.instances.CreateListenerInstance(
            li_pb2.CreateListenerInstanceRequest(
                listener_instance_id="one",
                listener_instance=li_pb2.ListenerInstance(
                    plugin="plugins/logger",
                    params={"logFile": str(tmp_path / "x.jsonl")},
                    event_types=event_types("TASK_FAIL"),
                ),
            )
        )
        yield p


def instance(**fields: Any) -> li_pb2.ListenerInstance:
    base: dict[str, Any] = {
        "plugin": "plugins/logger",
        "params": {"logFile": "/tmp/x.jsonl"},
        "event_types": event_types("TASK_FAIL"),
    }
    return li_pb2.ListenerInstance(**{**base, **fields})


def token(cursor: str) -> str:
    return base64.urlsafe_b64encode(cursor.encode()).decode()


def bad_time(seconds: int = 0, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def event_at(ts: timestamp_pb2.Timestamp) -> event_pb2.ListenerEvent:
    event = sample_event("task_fail")
    event.event_time.CopyFrom(ts)
    return event


Call = Callable[[Pair], Awaitable[Any]]

CASES: dict[str, tuple[Call, str]] = {
    "display-name-256": (
        lambda p: p.clients.instances.CreateListenerInstance(
            li_pb2.CreateListenerInstanceRequest(listener_instance=instance(display_name="d" * 256))
        ),
        "listener_instance.display_name",
    ),
    "plugin-display-name-256": (
        lambda p: p.clients.plugins.UpdatePlugin(
            plugin_pb2.UpdatePluginRequest(
                plugin=plugin_pb2.Plugin(name="plugins/logger", display_name="é" * 256),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        ),
        "plugin.display_name",
    ),
    "id-with-newline": (
        lambda p: p.clients.instances.CreateListenerInstance(
            li_pb2.CreateListenerInstanceRequest(
                listener_instance_id="two\n", listener_instance=instance()
            )
        ),
        "listener_instance_id",
    ),
    "huge-name": (
        lambda p: p.clients.instances.GetListenerInstance(
            li_pb2.GetListenerInstanceRequest(name="listenerInstances/" + "a" * 100_000)
        ),
        "name",
    ),
    "too-many-params": (
        lambda p: p.clients.instances.CreateListenerInstance(
            li_pb2.CreateListenerInstanceRequest(
                listener_instance=instance(params={f"k{i}": "v" for i in range(300)})
            )
        ),
        "listener_instance.params",
    ),
    "huge-param-value": (
        lambda p: p.clients.instances.CreateListenerInstance(
            li_pb2.CreateListenerInstanceRequest(
                listener_instance=instance(params={"logFile": "x" * 70_000})
            )
        ),
        "listener_instance.params.logFile",
    ),
    "unknown-isolation": (
        lambda p: p.clients.plugins.UpdatePlugin(
            plugin_pb2.UpdatePluginRequest(
                plugin=plugin_pb2.Plugin(name="plugins/logger", isolation=42),  # type: ignore[arg-type]
                update_mask=field_mask_pb2.FieldMask(paths=["isolation"]),
            )
        ),
        "plugin.isolation",
    ),
    "unknown-event-type-filter": (
        lambda p: p.clients.instances.CreateListenerInstance(
            li_pb2.CreateListenerInstanceRequest(listener_instance=instance(event_types=[1, 77]))
        ),
        "listener_instance.event_types[1]",
    ),
    "too-many-mask-paths": (
        lambda p: p.clients.instances.UpdateListenerInstance(
            li_pb2.UpdateListenerInstanceRequest(
                listener_instance=li_pb2.ListenerInstance(name="listenerInstances/one"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"] * 17),
            )
        ),
        "update_mask.paths",
    ),
    "event-time-nanos": (
        lambda p: p.clients.events.PublishEvent(
            es_pb2.PublishEventRequest(event=event_at(bad_time(nanos=-1)))
        ),
        "event.event_time",
    ),
    "event-time-year-10000": (
        lambda p: p.clients.events.PublishEvent(
            es_pb2.PublishEventRequest(event=event_at(bad_time(seconds=253_402_300_800)))
        ),
        "event.event_time",
    ),
    "payload-time-in-a-batch": (
        lambda p: p.clients.events.PublishEvents(
            es_pb2.PublishEventsRequest(
                events=[
                    sample_event("task_fail"),
                    event_pb2.ListenerEvent(
                        task_start=event_pb2.TaskRun(start_time=bad_time(seconds=-(10**12)))
                    ),
                ]
            )
        ),
        "events[1].task_start.start_time",
    ),
    "replay-from-bad-time": (
        lambda p: p.clients.instances.ReplayListenerInstance(
            li_pb2.ReplayListenerInstanceRequest(
                name="listenerInstances/one", from_time=bad_time(nanos=2_000_000_000)
            )
        ),
        "from_time",
    ),
    "forged-token-unicode-digit": (
        lambda p: p.clients.events.ListEvents(es_pb2.ListEventsRequest(page_token=token("²"))),
        "page_token",
    ),
    "forged-token-past-int64": (
        lambda p: p.clients.events.ListEvents(es_pb2.ListEventsRequest(page_token=token("9" * 30))),
        "page_token",
    ),
    "forged-token-not-base64": (
        lambda p: p.clients.plugins.ListPlugins(plugin_pb2.ListPluginsRequest(page_token="%%%")),
        "page_token",
    ),
    "forged-parked-token": (
        lambda p: p.clients.instances.ListParkedEvents(
            li_pb2.ListParkedEventsRequest(parent="listenerInstances/one", page_token=token("²"))
        ),
        "page_token",
    ),
    "negative-page-size": (
        lambda p: p.clients.instances.ListListenerInstances(
            li_pb2.ListListenerInstancesRequest(page_size=-1)
        ),
        "page_size",
    ),
    "too-many-sequences": (
        lambda p: p.clients.instances.RedeliverParkedEvents(
            li_pb2.RedeliverParkedEventsRequest(
                parent="listenerInstances/one", sequences=list(range(1, 1002))
            )
        ),
        "sequences",
    ),
    "long-request-id": (
        lambda p: p.clients.events.PublishEvent(
            es_pb2.PublishEventRequest(event=sample_event("task_fail"), request_id="r" * 129)
        ),
        "request_id",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_field_is_refused_with_a_field_violation(pair: Pair, case: str) -> None:
    call, field = CASES[case]
    before = await counts(pair)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(pair)
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert field in details(err).fields, (details(err), err.details())
    assert len(err.details() or "") < 2000  # a huge value is never echoed back whole
    assert await counts(pair) == before
    await check_consistent(pair)


async def test_limits_at_the_edge_are_accepted(pair: Pair) -> None:
    created = await pair.clients.instances.CreateListenerInstance(
        li_pb2.CreateListenerInstanceRequest(
            listener_instance_id="a" * 63, listener_instance=instance(display_name="é" * 255)
        )
    )
    assert created.display_name == "é" * 255
    reply = await pair.clients.events.PublishEvent(
        es_pb2.PublishEventRequest(
            event=event_at(bad_time(seconds=253_402_300_799, nanos=999_999_999)),
            request_id="r" * 128,
        )
    )
    assert reply.sequence > 0


async def test_bytes_that_are_not_a_message_are_invalid_argument(pair: Pair) -> None:
    """grpcio alone would answer INTERNAL ("Exception deserializing request!")."""
    before = await counts(pair)
    raw = pair.clients.channel.unary_unary("/listener.v1.EventService/PublishEvent")
    for garbage in (b"\xff\xff\xff\xff", b"\x0a\x05abc", b"\x12\x02\xc3\x28"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw(garbage)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, garbage
        assert details(caught.value).reason == "MALFORMED_REQUEST"
    upload = pair.clients.channel.stream_unary("/listener.v1.PluginService/UploadPluginPackage")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await upload(iter([b"\x0a\xff"]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await counts(pair) == before


def test_the_walker_reports_every_violation() -> None:
    request = es_pb2.PublishEventsRequest(
        events=[event_at(bad_time(nanos=-1)), sample_event("task_fail")],
        request_id="x" * 200,
    )
    request.events[1].type = 99  # type: ignore[assignment]
    found = validation.request_violations(request)
    assert [(v.field, v.reason) for v in found] == [
        ("events[0].event_time", "INVALID_ARGUMENT"),
        ("events[1].type", "UNKNOWN_EVENT_TYPE"),
        ("request_id", "INVALID_ARGUMENT"),
    ]
    # Long strings inside event payloads are bounded by the message size only.
    long_payload = sample_event("task_update")
    long_payload.task_update.task_params = "x" * 100_000
    long_payload.task_update.name = "n" * 1000  # "name" is limited in resources, not in events
    assert validation.request_violations(es_pb2.PublishEventRequest(event=long_payload)) == []
    # A resource sent back as it was read: its output-only parts are not the caller's input.
    fetched = li_pb2.ListenerInstance(name="listenerInstances/one")
    fetched.delivery.last_error = "traceback " * 2000
    fetched.delivery.next_attempt_time.seconds = 1_700_000_000
    update = li_pb2.UpdateListenerInstanceRequest(listener_instance=fetched)
    assert validation.request_violations(update) == []
    update.listener_instance.display_name = "d" * 256  # the request holds a copy
    assert [v.field for v in validation.request_violations(update)] == [
        "listener_instance.display_name"
    ]


# -- per-caller publish concurrency --------------------------------------------------------


async def test_one_publisher_cannot_take_every_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = ("publisher:greedy-1", "publisher:polite-2")
    gate = asyncio.Event()
    inside = 0
    real_publish = EventService._publish

    async def held_publish(self: EventService, *args: Any) -> Any:
        nonlocal inside
        inside += 1
        await gate.wait()
        return await real_publish(self, *args)

    async with running_pair(
        sqlite_url(tmp_path), tmp_path, tokens=tokens, publish_concurrency_per_caller=2
    ) as pair:
        stub = pair.clients.events

        def publish(who: str) -> Any:
            return stub.PublishEvent(
                es_pb2.PublishEventRequest(event=sample_event("task_fail")),
                metadata=bearer(who),
            )

        monkeypatch.setattr(EventService, "_publish", held_publish)
        held = [asyncio.ensure_future(publish("greedy-1")) for _ in range(2)]
        await eventually(lambda: inside == 2, timeout=60)  # both are inside the service now
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await publish("greedy-1")
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details(caught.value).reason == "PUBLISH_CONCURRENCY"
        # Another caller still gets in while the greedy one is at its limit.
        polite = asyncio.ensure_future(publish("polite-2"))
        await eventually(lambda: inside == 3, timeout=60)  # admitted, held like the others
        gate.set()
        async with asyncio.timeout(20):
            replies = await asyncio.gather(*held, polite)
        assert len({r.id for r in replies}) == 3
        # Slots are given back: the greedy caller may publish again.
        assert (await publish("greedy-1")).sequence > 0


class FakeContext:
    def peer(self) -> str:
        return "ipv4:10.1.2.3:4567"

    def invocation_metadata(self) -> None:
        return None  # an open server: the caller is its peer host


async def test_the_limiter_gives_slots_back_even_when_a_publish_fails() -> None:
    limiter = PublishLimiter(1)
    guard = limiter._guard
    key = "peer:ipv4:10.1.2.3"

    async def ok(request: Any, context: Any) -> str:
        assert limiter.in_flight(key) == 1
        return "ok"

    async def boom(request: Any, context: Any) -> str:
        raise RuntimeError("store down")

    assert await guard(ok)(None, FakeContext()) == "ok"
    with pytest.raises(RuntimeError):
        await guard(boom)(None, FakeContext())
    assert limiter.in_flight(key) == 0
    assert await guard(ok)(None, FakeContext()) == "ok"
