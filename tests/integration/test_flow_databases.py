"""The install → subscribe → publish → deliver path through the generated Python stubs,
on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from listener.v1 import event_service_pb2, listener_instance_pb2, plugin_pb2
from tests.support.jsonl import read_jsonl
from tests.support.samples import (
    PAYLOAD_FIELDS,
    all_type_events,
    event_type,
    logger_package,
    sample_event,
)
from tests.support.servers import eventually, running_pair


async def test_flow_on_each_database(db_url: str, tmp_path: Path) -> None:
    async with running_pair(db_url, tmp_path) as pair:
        c = pair.clients
        plugin = await c.plugins.CreatePlugin(
            plugin_pb2.CreatePluginRequest(package=logger_package())
        )
        assert plugin.name == "plugins/logger" and plugin.state == plugin_pb2.Plugin.STATE_ACTIVE

        log_file = tmp_path / "events.jsonl"
        subscribed = ["TASK_FAIL", "WORKFLOW_END", "WORKFLOW_ADDED"]
        instance = await c.instances.CreateListenerInstance(
            listener_instance_pb2.CreateListenerInstanceRequest(
                listener_instance_id="ops",
                listener_instance=listener_instance_pb2.ListenerInstance(
                    plugin="plugins/logger",
                    params={"logFile": str(log_file)},
                    event_types=[event_type(t) for t in subscribed],
                ),
            )
        )
        assert instance.name == "listenerInstances/ops"

        batch = await c.events.PublishEvents(
            event_service_pb2.PublishEventsRequest(events=all_type_events())
        )
        single = await c.events.PublishEvent(
            event_service_pb2.PublishEventRequest(event=sample_event("task_fail", 99))
        )
        published = [(f.upper(), r.id) for f, r in zip(PAYLOAD_FIELDS, batch.events, strict=True)]
        published.append(("TASK_FAIL", single.id))
        expected = [(t, i) for t, i in published if t in subscribed]

        lines = await eventually(
            lambda: (got := read_jsonl(log_file)) and len(got) >= len(expected) and got
        )
        assert [(x["type"], x["id"]) for x in lines] == expected
        added = next(x for x in lines if x["type"] == "WORKFLOW_ADDED")
        assert added["task_definitions"][0]["name"] == "extract"  # type: ignore[index]

        async def caught_up() -> listener_instance_pb2.ListenerInstance | None:
            # The cursor is written by the progress writer just after the plugin returned.
            inst = await c.instances.GetListenerInstance(
                listener_instance_pb2.GetListenerInstanceRequest(name="listenerInstances/ops")
            )
            return inst if inst.delivery.pending_count == 0 else None

        got = await eventually(caught_up)
        assert got.delivery.pending_count == 0
        assert got.delivery.delivered_sequence == single.sequence

        listed = await c.events.ListEvents(event_service_pb2.ListEventsRequest(page_size=5))
        assert [e.id for e in listed.events] == [i for _, i in published[:5]]
        assert listed.next_page_token

        # The same publish retried with its request_id stores nothing new.
        again = [
            await c.events.PublishEvent(
                event_service_pb2.PublishEventRequest(
                    event=sample_event("task_end"), request_id="r-1"
                )
            )
            for _ in range(2)
        ]
        assert again[0].id == again[1].id and again[0].sequence == again[1].sequence

        # Uninstall is refused while the instance exists, then works.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.plugins.DeletePlugin(plugin_pb2.DeletePluginRequest(name="plugins/logger"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await c.instances.DeleteListenerInstance(
            listener_instance_pb2.DeleteListenerInstanceRequest(name="listenerInstances/ops")
        )
        await c.plugins.DeletePlugin(plugin_pb2.DeletePluginRequest(name="plugins/logger"))
        listed_plugins = await c.plugins.ListPlugins(plugin_pb2.ListPluginsRequest())
        assert list(listed_plugins.plugins) == []
        status = await eventually(lambda: not pair.alert.host.packages.loaded)
        assert status
