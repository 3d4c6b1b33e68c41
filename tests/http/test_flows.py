"""Every route through HTTP/JSON with the answers it should give: an instance's whole life,
the operator actions, the parked-event flow and the errors of each class."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import aiohttp

from api_server import app as api_app
from listener_core.config import Config
from tests.http.support import Http, http_pair
from tests.support.databases import sqlite_url
from tests.support.jsonl import read_jsonl
from tests.support.samples import logger_package
from tests.support.servers import eventually, free_port


async def _install(http: Http) -> None:
    package = base64.b64encode(logger_package()).decode()
    reply = await http.call("POST", "/v1/plugins", {"package": package})
    assert reply.status == 200, reply.body


async def _instance(http: Http, instance_id: str) -> dict[str, Any]:
    reply = await http.call("GET", f"/v1/listenerInstances/{instance_id}")
    assert reply.status == 200, reply.body
    result: dict[str, Any] = reply.json
    return result


async def test_instance_life_through_http(tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    async with http_pair(tmp_path) as (_, http):
        await _install(http)
        # A field error first: BadRequest names the param, nothing is created.
        bad = await http.call(
            "POST",
            "/v1/listenerInstances?listenerInstanceId=audit",
            {"plugin": "plugins/logger", "params": {"colour": "x"}, "eventTypes": ["TASK_FAIL"]},
        )
        assert bad.status == 400 and bad.reason == "INVALID_PARAMS", bad.body
        assert any(f.startswith("params.") for f in bad.violations()), bad.body
        assert (await http.call("GET", "/v1/listenerInstances")).json["listenerInstances"] == []

        made = await http.call(
            "POST",
            "/v1/listenerInstances?listenerInstanceId=audit",
            {
                "plugin": "plugins/logger",
                "params": {"logFile": str(out)},
                "event_types": ["TASK_FAIL", "EVENT_TYPE_WORKFLOW_END"],
                "failurePolicy": {"mode": "PARK", "parkAfter": 3},
            },
        )
        assert made.status == 200, made.body
        assert made.json["name"] == "listenerInstances/audit"
        assert made.json["eventTypes"] == ["EVENT_TYPE_WORKFLOW_END", "EVENT_TYPE_TASK_FAIL"] or (
            made.json["eventTypes"] == ["EVENT_TYPE_TASK_FAIL", "EVENT_TYPE_WORKFLOW_END"]
        )
        assert made.json["failurePolicy"] == {"mode": "MODE_PARK", "parkAfter": 3}
        again = await http.call(
            "POST",
            "/v1/listenerInstances?listenerInstanceId=audit",
            {"plugin": "plugins/logger", "params": {"logFile": str(out)}, "eventTypes": [13]},
        )
        assert again.status == 409 and again.json["code"] == 6, again.body

        published = await http.call(
            "POST",
            "/v1/events:publish",
            {"event": {"taskFail": {"taskName": "extract"}}, "requestId": "r-1"},
        )
        assert published.status == 200, published.body
        sequence = int(published.json["sequence"])
        lines = await eventually(lambda: read_jsonl(out), timeout=60)
        assert lines[0]["task_name"] == "extract"
        delivered = await eventually(
            lambda: _delivered(http, "audit", sequence), timeout=60, interval=0.1
        )
        assert delivered["state"] == "STATE_ACTIVE"

        batch = await http.call(
            "POST",
            "/v1/events:batchPublish",
            {"events": [{"workflowEnd": {"workflowName": "w"}}, {"taskStart": {}}]},
        )
        assert batch.status == 200 and len(batch.json["events"]) == 2, batch.body
        listed = await http.call("GET", "/v1/events?eventTypes=WORKFLOW_END&eventTypes=TASK_FAIL")
        assert [e["type"] for e in listed.json["events"]] == [
            "EVENT_TYPE_TASK_FAIL",
            "EVENT_TYPE_WORKFLOW_END",
        ]
        after = await http.call("GET", f"/v1/events?afterSequence={sequence}&pageSize=1")
        assert len(after.json["events"]) == 1 and after.json["nextPageToken"]

        # Update: the mask in the query, the instance in the body; a stale etag is refused.
        renamed = await http.call(
            "PATCH",
            "/v1/listenerInstances/audit?updateMask=displayName",
            {"displayName": "Audit log", "etag": made.json["etag"]},
        )
        assert renamed.status == 200 and renamed.json["displayName"] == "Audit log"
        stale = await http.call(
            "PATCH",
            "/v1/listenerInstances/audit?updateMask=displayName",
            {"displayName": "x", "etag": made.json["etag"]},
        )
        assert stale.status == 409 and stale.json["code"] == 10, stale.body
        # Both spellings in, the mask's paths too: snake_case paths mean the same fields.
        snake = await http.call(
            "PATCH",
            "/v1/listenerInstances/audit?update_mask=display_name,event_types",
            {"display_name": "Snake", "event_types": ["TASK_FAIL", "WORKFLOW_END"]},
        )
        assert snake.status == 200, snake.body
        assert snake.json["displayName"] == "Snake"
        assert sorted(snake.json["eventTypes"]) == [
            "EVENT_TYPE_TASK_FAIL",
            "EVENT_TYPE_WORKFLOW_END",
        ]

        paused = await http.call("POST", "/v1/listenerInstances/audit:pause")
        assert paused.status == 200 and paused.json["state"] == "STATE_PAUSED"
        resumed = await http.call("POST", "/v1/listenerInstances/audit:resume", {})
        assert resumed.status == 200 and resumed.json["state"] == "STATE_ACTIVE"
        tested = await http.call(
            "POST", "/v1/listenerInstances/audit:sendTestEvent", {"eventType": "TASK_FAIL"}
        )
        assert tested.status == 200 and tested.json["delivered"] is True, tested.body
        replayed = await http.call(
            "POST", "/v1/listenerInstances/audit:replay", {"fromSequence": str(sequence)}
        )
        assert replayed.status == 200, replayed.body
        await eventually(lambda: sum(x.get("task_name") == "extract" for x in read_jsonl(out)) >= 2)

        in_use = await http.call("DELETE", "/v1/plugins/logger")
        assert in_use.status == 412 and in_use.reason == "PLUGIN_IN_USE", in_use.body
        gone = await http.call("DELETE", "/v1/listenerInstances/audit")
        assert gone.status == 200 and gone.json == {}
        assert (await http.call("GET", "/v1/listenerInstances/audit")).status == 404
        assert (await http.call("DELETE", "/v1/plugins/logger")).status == 200


async def _delivered(http: Http, instance_id: str, sequence: int) -> dict[str, Any] | None:
    found = await _instance(http, instance_id)
    delivery = found.get("delivery", {})
    done = int(delivery.get("deliveredSequence", "0")) >= sequence
    return found if done and int(delivery.get("pendingCount", "0")) == 0 else None


async def test_blocked_skip_parked_redeliver_retry(tmp_path: Path) -> None:
    async with http_pair(tmp_path) as (_, http):
        await _install(http)
        made = await http.call(
            "POST",
            "/v1/listenerInstances?listenerInstanceId=disk-full",
            {
                "plugin": "plugins/logger",
                "params": {"logFile": "/dev/full"},
                "eventTypes": ["TASK_FAIL"],
            },
        )
        assert made.status == 200, made.body
        await http.call("POST", "/v1/events:publish", {"event": {"taskFail": {"taskName": "t"}}})

        async def blocked() -> dict[str, Any] | None:
            found = await _instance(http, "disk-full")
            return found if found["state"] == "STATE_BLOCKED" else None

        found = await eventually(blocked, timeout=60, interval=0.1)
        assert found["delivery"]["lastError"], found
        retried = await http.call("POST", "/v1/listenerInstances/disk-full:retry")
        assert retried.status == 200, retried.body
        skipped = await http.call("POST", "/v1/listenerInstances/disk-full:skip")
        assert skipped.status == 200, skipped.body
        parked = await eventually(lambda: _parked(http, "disk-full"), timeout=60, interval=0.1)
        assert parked[0]["event"]["taskFail"]["taskName"] == "t"
        again = await http.call("POST", "/v1/listenerInstances/disk-full:redeliverParkedEvents", {})
        assert again.status == 200 and int(again.json["count"]) >= 1, again.body
        wrong = await http.call(
            "POST",
            "/v1/listenerInstances/disk-full:redeliverParkedEvents",
            {"sequences": ["x"]},
        )
        assert wrong.status == 400, wrong.body
        missing = await http.call("GET", "/v1/listenerInstances/nope/parkedEvents")
        assert missing.status == 404, missing.body


async def _parked(http: Http, instance_id: str) -> list[dict[str, Any]] | None:
    reply = await http.call("GET", f"/v1/listenerInstances/{instance_id}/parkedEvents")
    assert reply.status == 200, reply.body
    events: list[dict[str, Any]] = reply.json["parkedEvents"]
    return events or None


async def test_plugin_update_by_uploaded_package_and_errors(tmp_path: Path) -> None:
    package = logger_package()
    async with http_pair(tmp_path, max_package_bytes=64 * 1024) as (_, http):
        await _install(http)
        up = await http.call(
            "POST", "/v1/pluginPackages", raw=package, content_type="application/octet-stream"
        )
        assert up.status == 200, up.body
        swapped = await http.call(
            "PATCH", "/v1/plugins/logger", {"packageSha256": up.json["sha256"]}
        )
        assert swapped.status == 200 and swapped.json["sha256"] == up.json["sha256"]
        renamed = await http.call(
            "PATCH",
            "/v1/plugins/logger",
            {"plugin": {"displayName": "Renamed"}, "updateMask": "displayName"},
        )
        assert renamed.status == 200 and renamed.json["displayName"] == "Renamed"
        unknown_sha = await http.call("PATCH", "/v1/plugins/logger", {"packageSha256": "ab" * 32})
        assert unknown_sha.status in (400, 404, 412), unknown_sha.body
        wrong_sha = await http.call(
            "POST",
            "/v1/pluginPackages?sha256=" + "0" * 64,
            raw=package,
            content_type="application/zip",
        )
        assert wrong_sha.status == 400 and wrong_sha.reason == "SHA256_MISMATCH", wrong_sha.body
        not_zip = await http.call(
            "POST", "/v1/pluginPackages", raw=b"not a zip", content_type="application/zip"
        )
        assert not_zip.status == 400, not_zip.body
        # Over max_package_bytes: refused from its Content-Length, before anything is read.
        big = await http.call(
            "POST", "/v1/pluginPackages", raw=b"0" * (65 * 1024), content_type="application/zip"
        )
        assert big.status == 413 and big.reason == "BODY_TOO_LARGE", big.body

        # Sent chunked (no Content-Length): the upload's own limit stops it.
        async def chunks() -> Any:
            for _ in range(70):
                yield b"0" * 1024

        async with http.session.post(
            http.base + "/v1/pluginPackages",
            data=chunks(),
            headers={"Content-Type": "application/zip"},
        ) as response:
            body = json.loads(await response.read())
            assert response.status == 400, body
            assert body["details"][0]["reason"] == "PACKAGE_TOO_LARGE"
        listed = await http.call("GET", "/v1/plugins")
        assert [p["name"] for p in listed.json["plugins"]] == ["plugins/logger"]


async def test_no_alert_server_is_503_and_stores_nothing(tmp_path: Path) -> None:
    config = Config.from_keys(
        db_url=sqlite_url(tmp_path),
        data_dir=str(tmp_path),
        api_addr="127.0.0.1:0",
        http_addr="127.0.0.1:0",
        alert_targets=(f"127.0.0.1:{free_port()}",),  # nobody listens there
        alert_timeout=5.0,
    )
    api = await api_app.start(config)
    try:
        async with aiohttp.ClientSession() as session:
            http = Http(f"http://127.0.0.1:{api.http_port}", session)
            package = base64.b64encode(logger_package()).decode()
            reply = await http.call("POST", "/v1/plugins", {"package": package})
            assert reply.status == 503 and reply.json["code"] == 14, reply.body
            assert reply.reason == "ALERT_UNAVAILABLE"
            listed = await http.call("GET", "/v1/plugins")
            assert listed.json["plugins"] == []
    finally:
        await api.stop(0)
