"""listener_client against real servers in this process, and its retry and deadline policy
against a scripted server."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from listener.v1 import plugin_pb2, plugin_pb2_grpc
from listener_client import ListenerClient, ListenerClientError
from tests.support.databases import sqlite_url
from tests.support.samples import flaky_package, logger_package
from tests.support.servers import eventually, running_pair


async def test_plugins_instances_events_and_actions(tmp_path: Path) -> None:
    async with (
        running_pair(sqlite_url(tmp_path), tmp_path) as pair,
        ListenerClient(pair.api_addr, timeout=10) as client,
    ):
        assert await client.health()
        plugin = await client.install_plugin(logger_package())
        assert plugin.name == "plugins/logger" and plugin.params[0].field == "logFile"
        assert [p.name for p in await client.list_plugins()] == ["plugins/logger"]
        renamed = await client.update_plugin("logger", display_name="Audit")
        assert renamed.display_name == "Audit"
        assert (await client.get_plugin("plugins/logger")).etag == renamed.etag

        out = tmp_path / "audit.jsonl"
        inst = await client.create_instance(
            "audit",
            "logger",
            params={"logFile": str(out), "fsync": False},
            event_types=["TASK_FAIL", "workflow_end", "EVENT_TYPE_WORKFLOW_FAIL"],
        )
        assert inst.params["fsync"] == "false"
        assert len(inst.event_types) == 3

        one = await client.publish(
            {"task_fail": {"project_name": "etl", "task_name": "extract", "task_instance_id": 7}}
        )
        batch = await client.publish_batch(
            [{"workflowEnd": {"workflowName": "nightly"}}, {"task_start": {"task_name": "x"}}]
        )
        assert [r.sequence for r in batch] == [one.sequence + 1, one.sequence + 2]
        listed = await client.list_events(event_types=["TASK_FAIL", "WORKFLOW_END"])
        assert [e.id for e in listed] == [one.id, batch[0].id]
        assert len(await client.list_events(limit=2)) == 2

        async def delivered() -> bool:
            status = await client.get_instance("audit")
            return status.delivery.delivered_sequence == batch[0].sequence

        await eventually(delivered)
        assert len(out.read_text().splitlines()) == 2

        # A same request_id is stored once (so the client's own retries are safe).
        again = await client.publish({"task_fail": {}}, request_id="once")
        assert (await client.publish({"task_fail": {}}, request_id="once")).id == again.id

        paused = await client.pause("audit")
        assert paused.state == paused.STATE_PAUSED
        assert (await client.resume("audit")).state == paused.STATE_ACTIVE
        await client.retry("audit")
        lines_before = len(out.read_text().splitlines())
        await client.replay("audit", from_time=datetime.now(UTC) - timedelta(hours=1))

        # The reply may already show the redelivery done; the file shows it happened.
        async def redelivered() -> bool:
            return out.read_text().count(one.id) == 2

        await eventually(redelivered)
        assert len(out.read_text().splitlines()) >= lines_before + 2
        test = await client.send_test("audit", "TASK_FAIL")
        assert test.delivered and not test.error
        updated = await client.update_instance("audit", event_types=["TASK_FAIL"], park_after=3)
        assert list(updated.event_types) == [13] and updated.failure_policy.park_after == 3
        assert [i.name for i in await client.list_instances()] == ["listenerInstances/audit"]
        assert await client.list_parked("audit") == []
        assert await client.redeliver("audit") == 0
        await client.delete_instance("audit")
        await client.uninstall_plugin("logger")
        assert await client.list_plugins() == []


async def test_streaming_upload_reports_progress(tmp_path: Path) -> None:
    package = flaky_package()
    seen: list[tuple[int, int]] = []
    async with (
        running_pair(sqlite_url(tmp_path), tmp_path) as pair,
        ListenerClient(pair.api_addr) as client,
    ):
        path = tmp_path / "flaky.zip"
        path.write_bytes(package)
        plugin = await client.install_plugin(
            path,
            progress=lambda sent, total: seen.append((sent, total)),
            stream_threshold=0,
            chunk_size=256,
        )
        assert plugin.sha256 == hashlib.sha256(package).hexdigest()
        chunks = -(-len(package) // 256)
        assert len(seen) == chunks and seen[-1] == (len(package), len(package))
        assert [s for s, _ in seen] == sorted(s for s, _ in seen)
        # Update by upload too: same bytes, same plugin.
        updated = await client.update_plugin("flaky", package, stream_threshold=0)
        assert updated.sha256 == plugin.sha256


async def test_errors_carry_code_reason_and_fields(tmp_path: Path) -> None:
    async with (
        running_pair(sqlite_url(tmp_path), tmp_path) as pair,
        ListenerClient(pair.api_addr) as client,
    ):
        with pytest.raises(ListenerClientError) as missing:
            await client.get_instance("nope")
        assert missing.value.code == grpc.StatusCode.NOT_FOUND
        assert missing.value.reason == "INSTANCE_NOT_FOUND"

        await client.install_plugin(logger_package())
        with pytest.raises(ListenerClientError) as invalid:
            await client.create_instance(
                "bad", "logger", params={"colour": "blue"}, event_types=["TASK_FAIL"]
            )
        assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert invalid.value.reason == "INVALID_PARAMS"
        assert ("params.logFile", "is required") in invalid.value.field_violations
        assert ("params.colour", "unknown field") in invalid.value.field_violations
        assert "params.logFile: is required" in str(invalid.value)

        await client.create_instance(
            "user", "logger", params={"logFile": str(tmp_path / "u")}, event_types=[13]
        )
        with pytest.raises(ListenerClientError) as in_use:
            await client.uninstall_plugin("logger")
        assert in_use.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert in_use.value.reason == "PLUGIN_IN_USE"
        with pytest.raises(ListenerClientError) as stale:
            await client.uninstall_plugin("logger", etag="41")
        assert stale.value.code == grpc.StatusCode.ABORTED

        with pytest.raises(ValueError, match="unknown event type"):
            await client.create_instance("x", "logger", event_types=["TASK_EXPLODED"])


async def test_bearer_token_is_sent(tmp_path: Path) -> None:
    async with running_pair(
        sqlite_url(tmp_path), tmp_path, tokens=("admin:s3cret-admin", "viewer:s3cret-viewer")
    ) as pair:
        async with ListenerClient(pair.api_addr) as anonymous:
            with pytest.raises(ListenerClientError) as refused:
                await anonymous.list_plugins()
            assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert refused.value.reason == "TOKEN_MISSING"
            assert await anonymous.health()  # health stays open
        async with ListenerClient(pair.api_addr, token="wrong") as wrong:
            with pytest.raises(ListenerClientError) as bad:
                await wrong.list_plugins()
            assert bad.value.reason == "TOKEN_INVALID"
        async with ListenerClient(pair.api_addr, token="s3cret-viewer") as viewer:
            assert await viewer.list_plugins() == []
            with pytest.raises(ListenerClientError) as denied:
                await viewer.install_plugin(logger_package())
            assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
        async with ListenerClient(pair.api_addr, token="s3cret-admin") as admin:
            # The streaming upload carries the token too.
            assert (await admin.install_plugin(logger_package(), stream_threshold=0)).name


class _Scripted(plugin_pb2_grpc.PluginServiceServicer):
    """Answers ListPlugins with the scripted codes first, then OK; GetPlugin hangs."""

    def __init__(self, codes: list[grpc.StatusCode]) -> None:
        self.codes = codes
        self.calls = 0

    async def ListPlugins(self, request: Any, context: Any) -> plugin_pb2.ListPluginsResponse:
        self.calls += 1
        if self.codes:
            await context.abort(self.codes.pop(0), "scripted")
        return plugin_pb2.ListPluginsResponse(plugins=[plugin_pb2.Plugin(name="plugins/ok")])

    async def GetPlugin(self, request: Any, context: Any) -> plugin_pb2.Plugin:
        await asyncio.sleep(10)
        return plugin_pb2.Plugin()


@asynccontextmanager
async def _scripted(codes: list[grpc.StatusCode]) -> AsyncIterator[tuple[str, _Scripted]]:
    servicer = _Scripted(codes)
    server = grpc.aio.server()
    plugin_pb2_grpc.add_PluginServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(0)


async def test_unavailable_is_retried_and_other_codes_are_not() -> None:
    unavailable = grpc.StatusCode.UNAVAILABLE
    async with _scripted([unavailable, unavailable]) as (addr, servicer):
        async with ListenerClient(addr) as client:
            assert [p.name for p in await client.list_plugins()] == ["plugins/ok"]
        assert servicer.calls == 3
    async with _scripted([grpc.StatusCode.NOT_FOUND]) as (addr, servicer):
        async with ListenerClient(addr) as client:
            with pytest.raises(ListenerClientError) as failed:
                await client.list_plugins()
        assert failed.value.code == grpc.StatusCode.NOT_FOUND and servicer.calls == 1
    async with _scripted([unavailable] * 9) as (addr, servicer):
        async with ListenerClient(addr) as client:
            with pytest.raises(ListenerClientError) as gave_up:
                await client.list_plugins()
        assert gave_up.value.code == unavailable and servicer.calls == 5  # maxAttempts


async def test_every_call_has_a_deadline() -> None:
    async with _scripted([]) as (addr, _), ListenerClient(addr, timeout=0.3) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ListenerClientError) as late:
            await client.get_plugin("slow")
        assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert asyncio.get_running_loop().time() - started < 3
