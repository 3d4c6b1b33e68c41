"""/metrics of both servers after real traffic: the counters moved by exactly what happened."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from listener_client import ListenerClient, ListenerClientError
from listener_core.metrics import AlertMetrics, ApiMetrics
from tests.ops.helpers import Samples, samples, value
from tests.support.databases import sqlite_url
from tests.support.samples import flaky_package
from tests.support.servers import REPO, eventually, running_pair


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return samples(reply.text)


async def test_counters_follow_the_traffic(tmp_path: Path) -> None:
    metrics = {"api_metrics_addr": "127.0.0.1:0", "alert_metrics_addr": "127.0.0.1:0"}
    async with (
        running_pair(sqlite_url(tmp_path), tmp_path, **metrics) as pair,
        ListenerClient(pair.api_addr) as client,
    ):
        assert pair.api.metrics_endpoint is not None and pair.alert.metrics_endpoint is not None
        api_port, alert_port = pair.api.metrics_endpoint.port, pair.alert.metrics_endpoint.port
        assert api_port != alert_port

        await client.install_plugin(flaky_package())
        out = tmp_path / "out.jsonl"
        for name, park in (("good", None), ("parks", 1)):
            await client.create_instance(
                name,
                "flaky",
                params={"logFile": str(out) + name, "failTasks": "bad"},
                event_types=["TASK_FAIL", "WORKFLOW_END"],
                park_after=park,
            )
        # 5 task failures (one of them "bad") and 2 workflow ends, in three publishes.
        await client.publish({"task_fail": {"task_name": "a"}})
        await client.publish_batch(
            [{"task_fail": {"task_name": n}} for n in ("b", "c", "d")]
            + [{"workflow_end": {}}, {"workflow_end": {}}]
        )
        await client.publish({"task_fail": {"task_name": "bad"}})
        repeat = {"task_start": {"task_name": "once"}}
        await client.publish(repeat, request_id="same")
        await client.publish(repeat, request_id="same")  # answered from the first: not counted
        with pytest.raises(ListenerClientError):
            await client.get_plugin("missing")

        async def settled() -> Samples | None:
            scraped = await scrape(alert_port)
            done = (
                value(scraped, "listener_events_delivered_total", instance="parks") == 6
                and value(scraped, "listener_events_parked_total", instance="parks") == 1
            )
            return scraped if done else None

        alert = await eventually(settled)
        api = await scrape(api_port)

        assert value(api, "listener_events_published_total", type="TASK_FAIL") == 5
        assert value(api, "listener_events_published_total", type="WORKFLOW_END") == 2
        assert value(api, "listener_events_published_total", type="TASK_START") == 1
        assert value(api, "listener_events_published_total", type="SERVER_DOWN") == 0
        rpc = "listener_rpc_requests_total"
        publish = "/listener.v1.EventService/PublishEvent"
        assert value(api, rpc, method=publish, code="OK") == 4
        assert value(api, rpc, method="/listener.v1.EventService/PublishEvents", code="OK") == 1
        get_plugin = "/listener.v1.PluginService/GetPlugin"
        assert value(api, rpc, method=get_plugin, code="NOT_FOUND") == 1
        assert value(api, "listener_rpc_duration_seconds_count", method=publish) == 4
        # The same, under the conventional gRPC names and labels.
        unary = {"grpc_type": "unary", "grpc_service": "listener.v1.EventService"}
        assert value(api, "grpc_server_started_total", **unary, grpc_method="PublishEvent") == 4
        handled = "grpc_server_handled_total"
        assert value(api, handled, **unary, grpc_method="PublishEvent", grpc_code="OK") == 4
        assert value(api, handled, **unary, grpc_method="PublishEvents", grpc_code="OK") == 1
        plugins = {"grpc_type": "unary", "grpc_service": "listener.v1.PluginService"}
        assert value(api, handled, **plugins, grpc_method="GetPlugin", grpc_code="NOT_FOUND") == 1
        handling = "grpc_server_handling_seconds_count"
        assert value(api, handling, **unary, grpc_method="PublishEvent") == 4
        # Process and Python collectors, and what runs.
        assert value(api, "process_cpu_seconds_total") > 0
        assert value(api, "process_resident_memory_bytes") > 0
        assert ("python_gc_collections_total", (("generation", "0"),)) in api
        assert any(name == "python_info" for name, _ in api)
        builds = [dict(labels) for name, labels in alert if name == "listener_build_info"]
        assert len(builds) == 1 and builds[0]["version"] and builds[0]["python"]
        # The alert server counts its own (internal) RPCs in its own registry.
        assert (
            value(api, rpc, method="/listener.alert.v1.PluginHostService/LoadPlugin", code="OK")
            == 0
        )
        load = "/listener.alert.v1.PluginHostService/LoadPlugin"
        assert value(alert, rpc, method=load, code="OK") >= 1
        assert value(alert, "listener_events_published_total", type="TASK_FAIL") == 0

        # "good" blocks on the bad event: 6 delivered before it, failures counted, nothing
        # parked; "parks" parks it after one attempt and delivers all 6 others.
        assert value(alert, "listener_events_delivered_total", instance="good") == 6
        assert value(alert, "listener_events_parked_total", instance="good") == 0
        assert value(alert, "listener_delivery_failures_total", instance="good") >= 1
        assert value(alert, "listener_delivery_failures_total", instance="parks") == 1
        assert value(alert, "listener_delivery_latency_seconds_count") == 12
        assert value(alert, "listener_plugin_load_seconds_count") >= 1

        assert value(alert, "listener_instance_state", instance="good", state="BLOCKED") == 1
        assert value(alert, "listener_instance_state", instance="good", state="ACTIVE") == 0
        assert value(alert, "listener_instance_state", instance="parks", state="ACTIVE") == 1
        assert value(alert, "listener_instance_failed_attempts", instance="good") >= 1
        # Past the cursor: the bad event and the task_start for "good", the task_start (a
        # type it does not take: lag is an upper bound) for "parks".
        assert value(alert, "listener_instance_lag_events", instance="good") == 2
        assert value(alert, "listener_instance_lag_events", instance="parks") == 1

        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{api_port}/nope")).status_code == 404
            assert (await http.post(f"http://127.0.0.1:{api_port}/metrics")).status_code == 405


def test_registries_are_per_server() -> None:
    first, second = ApiMetrics(), ApiMetrics()
    first.published([(13, b""), (13, b""), (6, b"")])
    assert (
        value(
            samples(first.exposition().decode()),
            "listener_events_published_total",
            type="TASK_FAIL",
        )
        == 2
    )
    assert (
        value(
            samples(second.exposition().decode()),
            "listener_events_published_total",
            type="TASK_FAIL",
        )
        == 0
    )
    alert = AlertMetrics()  # an alert server next to them registers its names without clash
    alert.failed("x")
    assert b"listener_delivery_failures_total" in alert.exposition()


async def test_the_sample_dashboard_queries_only_exposed_metrics(tmp_path: Path) -> None:
    """deploy/grafana-dashboard.json must not chart, and deploy/prometheus/rules.yml must not
    alert on, a metric the servers do not export."""
    dashboard = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    ours = r"(?:listener|grpc_server)_[a-z_]+"
    wanted = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(ours, target["expr"])
    }
    rules = (REPO / "deploy" / "prometheus" / "rules.yml").read_text()
    from_rules = set(re.findall(ours, rules))
    assert {"listener_instance_state", "grpc_server_handled_total"} <= from_rules
    wanted |= from_rules
    metrics = {"api_metrics_addr": "127.0.0.1:0", "alert_metrics_addr": "127.0.0.1:0"}
    async with (
        running_pair(sqlite_url(tmp_path), tmp_path, **metrics) as pair,
        ListenerClient(pair.api_addr) as client,
        httpx.AsyncClient() as http,
    ):
        await client.install_plugin(flaky_package())
        await client.create_instance(
            "one",
            "flaky",
            params={"logFile": str(tmp_path / "x"), "failTasks": "bad"},
            event_types=["TASK_FAIL"],
            park_after=1,
        )
        # A delivery, a failure and a park: every labelled series then exists.
        await client.publish({"task_fail": {"task_name": "a"}})
        await client.publish({"task_fail": {"task_name": "bad"}})
        assert pair.api.metrics_endpoint and pair.alert.metrics_endpoint
        ports = (pair.api.metrics_endpoint.port, pair.alert.metrics_endpoint.port)

        async def exposed() -> set[str]:
            text = "".join(
                [(await http.get(f"http://127.0.0.1:{port}/metrics")).text for port in ports]
            )
            found = set(re.findall(rf"^(?:# TYPE )?({ours})", text, re.MULTILINE))
            return found if wanted <= found else set()

        assert wanted <= await eventually(exposed)
