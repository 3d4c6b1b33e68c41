"""The whole path through both servers as subprocesses, driven by grpcurl via reflection."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from google.protobuf import json_format

from listener.v1 import event_service_pb2
from tests.support.databases import sqlite_url
from tests.support.grpcurl import call, grpcurl
from tests.support.jsonl import read_jsonl
from tests.support.samples import TYPE_NAMES, all_type_events, logger_package
from tests.support.servers import ServerPair

SUBSCRIBED = ["WORKFLOW_START", "WORKFLOW_FAIL", "TASK_FAIL", "SERVER_DOWN", "TASK_ADDED"]


def wait_lines(path: Path, count: int, timeout: float = 60.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    lines: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        lines = read_jsonl(path)
        if len(lines) >= count:
            break
        time.sleep(0.05)
    return lines


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])  # the default, the fallback
def test_install_subscribe_publish_deliver_with_grpcurl(tmp_path: Path, event_loop: str) -> None:
    env = {"LISTENER_EVENT_LOOP": event_loop}
    pair = ServerPair(sqlite_url(tmp_path), tmp_path / "data", extra_env=env)
    try:
        pair.start_both()
        for which in ("api_server", "alert_server"):
            assert f"event loop {event_loop})" in pair.log(which), pair.log(which)
        listed = grpcurl(pair.api_addr, "list").stdout.split()
        for service in (
            "listener.v1.PluginService",
            "listener.v1.ListenerInstanceService",
            "listener.v1.EventService",
            "grpc.health.v1.Health",
        ):
            assert service in listed
        assert "listener.alert.v1.PluginHostService" in grpcurl(pair.alert_addr, "list").stdout
        described = grpcurl(pair.api_addr, "describe", "listener.v1.ListenerEvent").stdout
        assert "task_fail" in described

        plugin = call(
            pair.api_addr,
            "listener.v1.PluginService/CreatePlugin",
            {"package": base64.b64encode(logger_package()).decode()},
        )
        assert plugin["name"] == "plugins/logger"
        assert plugin["version"] == "1.0.0"
        assert plugin["params"][0]["field"] == "logFile"

        log_file = tmp_path / "out" / "events.jsonl"
        instance = call(
            pair.api_addr,
            "listener.v1.ListenerInstanceService/CreateListenerInstance",
            {
                "listener_instance_id": "audit",
                "listener_instance": {
                    "plugin": "plugins/logger",
                    "params": {"logFile": str(log_file)},
                    "event_types": [f"EVENT_TYPE_{t}" for t in SUBSCRIBED],
                },
            },
        )
        assert instance["name"] == "listenerInstances/audit"
        assert instance["state"] == "STATE_ACTIVE"

        published: list[tuple[str, str, int]] = []
        for name, event in zip(TYPE_NAMES, all_type_events(), strict=True):
            request = json_format.MessageToDict(event_service_pb2.PublishEventRequest(event=event))
            reply = call(pair.api_addr, "listener.v1.EventService/PublishEvent", request)
            published.append((name, reply["id"], int(reply["sequence"])))
        sequences = [s for _, _, s in published]
        assert sequences == sorted(sequences) and len(set(sequences)) == 13

        # The recorded cursor first: once nothing is pending, every delivery (a wrong one
        # too) is in the file, so the file's lines are final without a sleep.
        deadline = time.monotonic() + 60  # the cursor is written just after delivery
        while True:
            got = call(
                pair.api_addr,
                "listener.v1.ListenerInstanceService/GetListenerInstance",
                {"name": "listenerInstances/audit"},
            )
            if int(got["delivery"].get("pending_count", 0)) == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert int(got["delivery"].get("pending_count", 0)) == 0
        last_subscribed = max(seq for name, _, seq in published if name in SUBSCRIBED)
        assert int(got["delivery"]["delivered_sequence"]) == last_subscribed

        expected = [(name, eid) for name, eid, _ in published if name in SUBSCRIBED]
        lines = wait_lines(log_file, len(expected))
        assert [(line["type"], line["id"]) for line in lines] == expected
        task_fail = next(line for line in lines if line["type"] == "TASK_FAIL")
        assert task_fail["task_name"] == "task-13" and task_fail["task_instance_id"] == 70013

        status = call(pair.alert_addr, "listener.alert.v1.PluginHostService/GetStatus", {})
        assert status["instances"][0]["instance_id"] == "audit"

        # SIGTERM: both servers shut down gracefully.
        assert pair.stop() == {"alert_server": 0, "api_server": 0}
    finally:
        pair.stop()
