"""The content filter through every door: the Python client, HTTP/JSON, listenerctl, and the
per-instance metric of filtered events. listenerctl runs in a thread: the servers live on
this test's event loop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from listener_client import ListenerClient, ListenerClientError
from tests.ops.helpers import cli, samples, value
from tests.support.databases import sqlite_url
from tests.support.jsonl import read_jsonl
from tests.support.samples import flaky_package
from tests.support.servers import eventually, running_pair

ETL = 'event.task_fail.project_name == "etl"'


async def test_client_http_cli_and_metric(tmp_path: Path) -> None:
    settings = {"alert_metrics_addr": "127.0.0.1:0"}
    async with (
        running_pair(sqlite_url(tmp_path), tmp_path, **settings) as pair,
        ListenerClient(pair.api_addr, timeout=10) as client,
    ):
        await client.install_plugin(flaky_package())
        out = tmp_path / "out.jsonl"

        # Python client: a bad filter is an InvalidArgument naming the field and the place.
        with pytest.raises(ListenerClientError) as caught:
            await client.create_instance(
                "etl",
                "flaky",
                params={"logFile": str(out)},
                event_types=["TASK_FAIL"],
                filter="event.task_fail.project_name = 'etl'",
            )
        [(field, description)] = caught.value.field_violations
        assert field == "listener_instance.filter" and "line 1, column 30" in description
        inst = await client.create_instance(
            "etl", "flaky", params={"logFile": str(out)}, event_types=["TASK_FAIL"], filter=ETL
        )
        assert inst.filter == ETL
        sent = await client.publish_batch(
            [{"task_fail": {"project_name": p, "task_name": p}} for p in ("etl", "web", "etl")]
        )
        await eventually(lambda: len(read_jsonl(out)) == 2)
        assert [x["id"] for x in read_jsonl(out)] == [sent[0].id, sent[2].id]
        status = await eventually(lambda: _with_filtered(client, "etl", 1), timeout=60)
        assert status.delivery.pending_count == 0

        port = pair.alert.metrics_endpoint.port  # type: ignore[union-attr]
        async with httpx.AsyncClient() as http:
            scraped = samples((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
        assert value(scraped, "listener_events_filtered_total", instance="etl") == 1
        assert value(scraped, "listener_events_delivered_total", instance="etl") == 2

        # HTTP/JSON: "filter" on the instance, "filteredCount" in its status; a bad one is 400.
        base = f"http://127.0.0.1:{pair.api.http_port}/v1"
        async with httpx.AsyncClient() as http:
            got = (await http.get(f"{base}/listenerInstances/etl")).json()
            assert got["filter"] == ETL and got["delivery"]["filteredCount"] == "1"
            bad = await http.patch(
                f"{base}/listenerInstances/etl?updateMask=filter",
                json={"filter": "event.task_fail.projectName == 'x'"},
            )
            assert bad.status_code == 400
            details = [d for d in bad.json()["details"] if d["@type"].endswith("BadRequest")]
            [violation] = details[0]["fieldViolations"]
            assert violation["field"] == "listener_instance.filter"
            assert "no field 'projectName'" in violation["description"]
            changed = await http.patch(
                f"{base}/listenerInstances/etl?updateMask=filter",
                json={"filter": 'event.task_fail.project_name == "web"'},
            )
            assert changed.status_code == 200, changed.text

        # listenerctl: --filter on update, shown by status; a bad one exits 4 with the field.
        proc = await asyncio.to_thread(
            cli, "--json", "instance", "update", "etl", "--filter", "event.", server=pair.api_addr
        )
        assert proc.returncode == 4, proc.stderr
        error = json.loads(proc.stderr)["error"]
        assert error["field_violations"][0]["field"] == "listener_instance.filter"
        proc = await asyncio.to_thread(
            cli, "instance", "update", "etl", "--filter", "", server=pair.api_addr
        )
        assert proc.returncode == 0, proc.stderr
        proc = await asyncio.to_thread(cli, "instance", "status", "etl", server=pair.api_addr)
        assert "filter" in proc.stdout and "filtered" in proc.stdout
        assert (await client.get_instance("etl")).filter == ""
        proc = await asyncio.to_thread(
            cli,
            "--json",
            "instance",
            "create",
            "web",
            "--plugin",
            "flaky",
            "--param",
            f"logFile={tmp_path / 'web.jsonl'}",
            "--events",
            "TASK_FAIL",
            "--filter",
            'event.task_fail.task_name.startsWith("we")',
            server=pair.api_addr,
        )
        assert proc.returncode == 0, proc.stderr
        assert (await client.get_instance("web")).filter.startswith("event.task_fail")
        later = await client.publish_batch(
            [{"task_fail": {"project_name": p, "task_name": p}} for p in ("etl", "web")]
        )
        await eventually(lambda: len(read_jsonl(tmp_path / "web.jsonl")) == 1)
        assert read_jsonl(tmp_path / "web.jsonl")[0]["id"] == later[1].id
        await eventually(lambda: len(read_jsonl(out)) == 4)  # no filter any more: both


async def _with_filtered(client: ListenerClient, iid: str, count: int):  # type: ignore[no-untyped-def]
    inst = await client.get_instance(iid)
    return inst if inst.delivery.filtered_count == count else None
