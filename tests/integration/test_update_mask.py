"""update_mask as AIP-134 says: named fields change; without a mask the populated fields
change and the others keep their values; ``*`` alone changes all of them."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from listener.v1 import listener_instance_pb2 as li_pb2
from listener.v1 import plugin_pb2
from tests.support.databases import sqlite_url
from tests.support.samples import event_type, logger_package
from tests.support.servers import running_pair

PARK = li_pb2.FailurePolicy(mode=li_pb2.FailurePolicy.MODE_PARK, park_after=3)


async def test_instance_update_without_a_mask_changes_only_what_it_sends(tmp_path: Path) -> None:
    async with running_pair(sqlite_url(tmp_path), tmp_path) as pair:
        c = pair.clients
        await c.plugins.CreatePlugin(plugin_pb2.CreatePluginRequest(package=logger_package()))
        log_file = str(tmp_path / "x.jsonl")
        await c.instances.CreateListenerInstance(
            li_pb2.CreateListenerInstanceRequest(
                listener_instance_id="audit",
                listener_instance=li_pb2.ListenerInstance(
                    plugin="plugins/logger",
                    display_name="Audit",
                    params={"logFile": log_file},
                    event_types=[event_type("TASK_FAIL")],
                    failure_policy=PARK,
                ),
            )
        )

        # What grpcurl sends for "add an event type": no mask, no policy.
        got = await c.instances.UpdateListenerInstance(
            li_pb2.UpdateListenerInstanceRequest(
                listener_instance=li_pb2.ListenerInstance(
                    name="listenerInstances/audit",
                    event_types=[event_type("TASK_FAIL"), event_type("WORKFLOW_END")],
                )
            )
        )
        assert set(got.event_types) == {event_type("WORKFLOW_END"), event_type("TASK_FAIL")}
        assert got.failure_policy.mode == li_pb2.FailurePolicy.MODE_PARK  # kept
        assert got.failure_policy.park_after == 3
        assert got.display_name == "Audit" and got.params["logFile"] == log_file

        # A mask names what changes, even to empty: the display name goes back to the id.
        got = await c.instances.UpdateListenerInstance(
            li_pb2.UpdateListenerInstanceRequest(
                listener_instance=li_pb2.ListenerInstance(name="listenerInstances/audit"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        )
        assert got.display_name == "audit"
        assert got.failure_policy.mode == li_pb2.FailurePolicy.MODE_PARK

        # "*": every field as sent, the policy back to the default (blocking).
        got = await c.instances.UpdateListenerInstance(
            li_pb2.UpdateListenerInstanceRequest(
                listener_instance=li_pb2.ListenerInstance(
                    name="listenerInstances/audit",
                    display_name="All",
                    params={"logFile": log_file},
                    event_types=[event_type("TASK_FAIL")],
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["*"]),
            )
        )
        assert got.display_name == "All" and list(got.event_types) == [event_type("TASK_FAIL")]
        assert got.failure_policy.mode == li_pb2.FailurePolicy.MODE_BLOCK

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.instances.UpdateListenerInstance(
                li_pb2.UpdateListenerInstanceRequest(
                    listener_instance=li_pb2.ListenerInstance(name="listenerInstances/audit"),
                    update_mask=field_mask_pb2.FieldMask(paths=["*", "params"]),
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_plugin_update_without_a_mask_keeps_the_isolation(tmp_path: Path) -> None:
    async with running_pair(sqlite_url(tmp_path), tmp_path) as pair:
        c = pair.clients
        await c.plugins.CreatePlugin(
            plugin_pb2.CreatePluginRequest(
                package=logger_package(),
                plugin=plugin_pb2.Plugin(isolation=plugin_pb2.ISOLATION_PROCESS),
            )
        )
        got = await c.plugins.UpdatePlugin(
            plugin_pb2.UpdatePluginRequest(
                plugin=plugin_pb2.Plugin(name="plugins/logger", display_name="Audit logger")
            )
        )
        assert got.display_name == "Audit logger"  # without a mask it used to change nothing
        assert got.isolation == plugin_pb2.ISOLATION_PROCESS
