"""Bad input gets a precise status and message, and leaves the store as it was."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import func, select

from event_store import models
from listener.v1 import event_pb2, event_service_pb2, listener_instance_pb2, plugin_pb2
from tests.support.databases import sqlite_url
from tests.support.samples import event_type, logger_package, make_zip, manifest, sample_event
from tests.support.servers import Pair, running_pair


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    async with running_pair(sqlite_url(tmp_path), tmp_path) as p:
        await p.clients.plugins.CreatePlugin(
            plugin_pb2.CreatePluginRequest(package=logger_package())
        )
        await p.clients.instances.CreateListenerInstance(
            listener_instance_pb2.CreateListenerInstanceRequest(
                listener_instance_id="one",
                listener_instance=listener_instance_pb2.ListenerInstance(
                    plugin="plugins/logger",
                    params={"logFile": str(tmp_path / "x.jsonl")},
                    event_types=[event_type("TASK_FAIL")],
                ),
            )
        )
        yield p


async def snapshot(pair: Pair) -> dict[str, int]:
    async with pair.api.store.reader() as session:
        return {
            table.__tablename__: int(await session.scalar(select(func.count()).select_from(table)))
            for table in (
                models.Package,
                models.Plugin,
                models.ListenerInstance,
                models.Delivery,
                models.Event,
                models.PublishRequest,
            )
        }


def details(err: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, "every error carries a google.rpc.Status"
    status = status_pb2.Status.FromString(raw)
    reason, fields = "", []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(bad):
            fields = [v.field for v in bad.field_violations]
    return reason, fields


async def expect(call: object, code: grpc.StatusCode, *words: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    err = caught.value
    assert err.code() == code, f"{err.code()} {err.details()}"
    for word in words:
        assert word in (err.details() or ""), f"{word!r} not in {err.details()!r}"
    return err


BAD_IMPORT = make_zip(
    {"broken.py": "import not_a_module_anywhere\n"}, manifest("broken", "broken:Broken")
)
NO_CLASS = make_zip({"empty.py": "X = 1\n"}, manifest("empty", "empty:Missing"))
NOT_A_PLUGIN = make_zip({"np.py": "class NotPlugin:\n    pass\n"}, manifest("np", "np:NotPlugin"))


@pytest.mark.parametrize(
    ("package", "words"),
    [
        (b"this is not a zip", ["zip"]),
        (make_zip({"x.py": "pass"}), ["listener-plugin.toml"]),
        (make_zip({"x.py": "pass"}, 'name = "x"\nversion = "1"\n'), ["entry"]),
        (BAD_IMPORT, ["not_a_module_anywhere"]),
        (NO_CLASS, ["Missing"]),
        (NOT_A_PLUGIN, ["ListenerPlugin"]),
    ],
    ids=[
        "not-zip",
        "no-manifest",
        "manifest-without-entry",
        "entry-does-not-import",
        "entry-class-missing",
        "not-a-plugin-class",
    ],
)
async def test_bad_packages_are_rejected_and_nothing_is_stored(
    pair: Pair, package: bytes, words: list[str]
) -> None:
    before = await snapshot(pair)
    err = await expect(
        pair.clients.plugins.CreatePlugin(plugin_pb2.CreatePluginRequest(package=package)),
        grpc.StatusCode.INVALID_ARGUMENT,
        *words,
    )
    assert details(err)[0]
    assert await snapshot(pair) == before
    assert len(pair.alert.host.packages.loaded) == 1  # only the logger stays loaded


async def test_params_missing_a_required_field(pair: Pair) -> None:
    before = await snapshot(pair)
    err = await expect(
        pair.clients.instances.CreateListenerInstance(
            listener_instance_pb2.CreateListenerInstanceRequest(
                listener_instance=listener_instance_pb2.ListenerInstance(
                    plugin="plugins/logger", params={}, event_types=[event_type("TASK_FAIL")]
                )
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "logFile",
    )
    assert details(err) == ("INVALID_PARAMS", ["params.logFile"])
    assert await snapshot(pair) == before


async def test_unknown_instance_and_plugin(pair: Pair) -> None:
    await expect(
        pair.clients.instances.GetListenerInstance(
            listener_instance_pb2.GetListenerInstanceRequest(name="listenerInstances/nope")
        ),
        grpc.StatusCode.NOT_FOUND,
        "listenerInstances/nope",
    )
    await expect(
        pair.clients.instances.CreateListenerInstance(
            listener_instance_pb2.CreateListenerInstanceRequest(
                listener_instance=listener_instance_pb2.ListenerInstance(
                    plugin="plugins/ghost",
                    params={"logFile": "/tmp/x"},
                    event_types=[event_type("TASK_FAIL")],
                )
            )
        ),
        grpc.StatusCode.NOT_FOUND,
        "plugins/ghost",
    )
    await expect(
        pair.clients.instances.GetListenerInstance(
            listener_instance_pb2.GetListenerInstanceRequest(name="instances/bad")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "listenerInstances/",
    )


async def test_delete_plugin_in_use(pair: Pair) -> None:
    before = await snapshot(pair)
    await expect(
        pair.clients.plugins.DeletePlugin(plugin_pb2.DeletePluginRequest(name="plugins/logger")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "listenerInstances/one",
    )
    assert await snapshot(pair) == before


async def test_bad_events(pair: Pair) -> None:
    before = await snapshot(pair)
    events = pair.clients.events
    no_payload = event_pb2.ListenerEvent(type=event_type("TASK_FAIL"))
    await expect(
        events.PublishEvent(event_service_pb2.PublishEventRequest(event=no_payload)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "payload",
    )
    unknown = sample_event("task_fail")
    unknown.type = 99  # type: ignore[assignment]
    err = await expect(
        events.PublishEvent(event_service_pb2.PublishEventRequest(event=unknown)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown event type 99",
    )
    assert details(err)[0] == "UNKNOWN_EVENT_TYPE"
    mismatch = sample_event("task_fail")
    mismatch.type = event_type("TASK_START")  # type: ignore[assignment]
    await expect(
        events.PublishEvent(event_service_pb2.PublishEventRequest(event=mismatch)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "TASK_START",
        "task_fail",
    )
    # One bad event fails the whole batch: all or nothing.
    await expect(
        events.PublishEvents(
            event_service_pb2.PublishEventsRequest(events=[sample_event("task_fail"), no_payload])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "events[1]",
    )
    with_id = sample_event("task_fail")
    with_id.id = "mine"
    await expect(
        events.PublishEvent(event_service_pb2.PublishEventRequest(event=with_id)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "assigned by the server",
    )
    long_source = sample_event("task_fail")
    long_source.source = "s" * 256
    # In a batch, each refusal names the event's index (the name is built only then).
    for index, bad, words in (
        (2, with_id, ("events[2]: id are assigned by the server",)),
        (1, mismatch, ("events[1].type is EVENT_TYPE_TASK_START but the payload is task_fail",)),
        (0, unknown, ("events[0].type", "unknown event type 99")),
        (1, long_source, ("events[1].source is longer than 255",)),
    ):
        batch = [sample_event("task_fail"), sample_event("task_fail"), sample_event("task_fail")]
        batch[index] = bad
        await expect(
            events.PublishEvents(event_service_pb2.PublishEventsRequest(events=batch)),
            grpc.StatusCode.INVALID_ARGUMENT,
            *words,
        )
    assert await snapshot(pair) == before


async def test_oversized_message_is_refused(tmp_path: Path) -> None:
    async with running_pair(sqlite_url(tmp_path), tmp_path, max_message_bytes=1024) as p:
        await expect(
            p.clients.plugins.CreatePlugin(plugin_pb2.CreatePluginRequest(package=b"x" * 4096)),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
