"""The harness and the alert server reach the same outcome for the same plugin and events.

Each row is a plugin package (the same zip goes to both), a failure policy and what should
become of two TASK_FAIL events. The harness runs it in this process; the real servers run it
after CreatePlugin / CreateListenerInstance / PublishEvents. Outcomes, error texts (with the
ids and sequences each side assigned put back to placeholders), attempt counts and the
retry_after wait must match. Params are validated alike too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from listener.v1 import event_pb2, event_service_pb2
from listener.v1 import listener_instance_pb2 as li_pb2
from listener_common import ParamValidationError
from listener_common.events import ListenerEvent
from listener_common.testing import PluginHarness, Report, sample_event
from tests.delivery.helpers import create_instance, get_instance, install
from tests.support.samples import make_zip, manifest
from tests.support.servers import eventually, running_pair

HEADER = """
import asyncio
from listener_common import DeliveryError, ListenerPlugin, params
"""

PLUGINS = {
    "success": """
class P(ListenerPlugin):
    async def on_task_fail(self, event):
        pass
""",
    "sync": """
class P(ListenerPlugin):
    def on_task_fail(self, event):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a worker thread, off the event loop, as promised
        raise AssertionError("a plain def handler ran on the event loop")
""",
    "batch": """
class P(ListenerPlugin):
    async def on_events(self, batch):
        assert [e.type for e in batch] == ["TASK_FAIL"] * len(batch)
""",
    "raising": """
class P(ListenerPlugin):
    async def on_task_fail(self, event):
        raise ValueError(f"cannot reach the pager for {event.task_name}")
""",
    "hanging": """
class P(ListenerPlugin):
    async def on_task_fail(self, event):
        await asyncio.sleep(3600)
""",
    "batch-raising": """
class P(ListenerPlugin):
    def on_events(self, batch):
        raise ConnectionError(f"bulk write of {len(batch)} refused")
""",
    "flaky": """
class P(ListenerPlugin):
    async def open(self, config):
        self.failed = set()

    async def on_task_fail(self, event):
        if event.id not in self.failed:
            self.failed.add(event.id)
            raise RuntimeError("first try fails")
""",
    "retry-after": """
class P(ListenerPlugin):
    async def on_task_fail(self, event):
        raise DeliveryError("429 from the destination", retry_after=20)
""",
    "permanent": """
class P(ListenerPlugin):
    async def on_task_fail(self, event):
        raise DeliveryError("400: the destination refuses this event", permanent=True)
""",
}


@dataclass(frozen=True)
class Case:
    plugin: str
    policy: str  # "block" or "park"
    expected: list[str]
    park_after: int = 0
    #: Failed attempts to wait for on a blocked head (the server would go on retrying).
    attempts: int = 2


CASES = [
    Case("success", "block", ["delivered", "delivered"]),
    Case("sync", "block", ["delivered", "delivered"]),
    Case("batch", "block", ["delivered", "delivered"]),
    Case("flaky", "block", ["retried", "retried"]),
    Case("raising", "block", ["blocked", "pending"]),
    Case("hanging", "block", ["blocked", "pending"]),
    Case("batch-raising", "block", ["blocked", "pending"]),
    Case("retry-after", "block", ["blocked", "pending"], attempts=1),
    Case("raising", "park", ["parked", "parked"], park_after=2),
    Case("permanent", "park", ["parked", "parked"], park_after=5),
]

#: Delivery settings both sides share (the server's poll_interval is only a fallback).
SETTINGS: dict[str, Any] = {"handler_timeout": 1.0, "retry_base": 0.05, "retry_max": 30.0}


@dataclass
class Seen:
    """What one side did, in terms both sides share."""

    outcomes: list[str]
    #: Per event: the last error (ids and sequences as placeholders) and failed attempts.
    errors: list[str]
    failures: list[int]
    #: The wait before the next attempt of a blocked head, in seconds (None: not blocked).
    next_wait: float | None


def normalize(text: str, events: list[tuple[str, int]]) -> str:
    for n, (event_id, sequence) in enumerate(events):
        text = text.replace(event_id, f"<id{n}>")
        text = re.sub(rf"\(sequence {sequence}\)", f"(sequence <seq{n}>)", text)
    return text


def events_pair() -> list[ListenerEvent]:
    return [
        sample_event("TASK_FAIL", task_name="load_orders"),
        sample_event("TASK_FAIL", task_name="load_refunds"),
    ]


def to_proto(event: ListenerEvent) -> event_pb2.ListenerEvent:
    flat = event.to_dict()
    common = {"id", "sequence", "type", "event_time", "publish_time", "source"}
    payload = {k: v for k, v in flat.items() if k not in common and v is not None}
    return json_format.ParseDict(
        {"event_time": flat["event_time"], "source": flat["source"], "task_fail": payload},
        event_pb2.ListenerEvent(),
    )


def package(name: str) -> bytes:
    return make_zip({"p.py": HEADER + PLUGINS[name]}, manifest(name, "p:P"))


async def through_harness(case: Case, zip_path: Path) -> Seen:
    events = events_pair()
    harness = PluginHarness(
        zip_path,
        policy="park" if case.policy == "park" else "block",
        park_after=case.park_after,
        max_attempts=case.attempts,
        **SETTINGS,
    )
    report: Report = await harness.run(events)
    keys = [(e.id, e.sequence) for e in events]
    blocked = [a for a in report.attempts if not a.parked]
    return Seen(
        report.outcomes(),
        [normalize(r.error, keys) for r in report.results],
        [r.failures for r in report.results],
        blocked[-1].delay if "blocked" in report.outcomes() else None,
    )


async def through_server(pair: Any, case: Case, index: int) -> Seen:
    instance = f"case-{index}"
    policy = (
        li_pb2.FailurePolicy(mode=li_pb2.FailurePolicy.MODE_PARK, park_after=case.park_after)
        if case.policy == "park"
        else None
    )
    await create_instance(
        pair.clients, instance, f"plugins/{case.plugin}", {}, ["TASK_FAIL"], policy
    )
    reply = await pair.clients.events.PublishEvents(
        event_service_pb2.PublishEventsRequest(events=[to_proto(e) for e in events_pair()])
    )
    keys = [(e.id, e.sequence) for e in reply.events]
    last = keys[-1][1]

    async def settled() -> li_pb2.ListenerInstance | None:
        inst = await get_instance(pair.clients, instance)
        d = inst.delivery
        done = d.delivered_sequence >= last and d.attempts == 0
        return inst if done or d.attempts >= case.attempts else None

    inst = await eventually(settled, timeout=60)
    seen_at = datetime.now(UTC)
    parked = {
        p.event.sequence: p
        for p in (
            await pair.clients.instances.ListParkedEvents(
                li_pb2.ListParkedEventsRequest(parent=f"listenerInstances/{instance}")
            )
        ).parked_events
    }
    d = inst.delivery
    history = list(d.recent_attempts)
    outcomes, errors, failures = [], [], []
    head_found = False
    for event_id, sequence in keys:
        failed = [a for a in history if a.error and a.event_id == event_id]
        if sequence in parked:
            item = parked[sequence]
            outcomes.append("parked")
            errors.append(normalize(item.last_error, keys))
            failures.append(item.attempts)
        elif sequence <= d.delivered_sequence:
            outcomes.append("retried" if failed else "delivered")
            errors.append(normalize(failed[0].error, keys) if failed else "")
            failures.append(len(failed))
        elif not head_found:
            head_found = True
            outcomes.append("blocked")
            errors.append(normalize(d.last_error, keys))
            failures.append(d.attempts)
        else:
            outcomes.append("pending")
            errors.append("")
            failures.append(0)
    wait = None
    if "blocked" in outcomes:
        wait = (d.next_attempt_time.ToDatetime(tzinfo=UTC) - seen_at).total_seconds()
    return Seen(outcomes, errors, failures, wait)


async def test_harness_and_alert_server_reach_the_same_outcomes(tmp_path: Path) -> None:
    zips = {}
    for name in PLUGINS:
        zips[name] = tmp_path / f"{name}.zip"
        zips[name].write_bytes(package(name))
    async with running_pair(
        f"sqlite+aiosqlite:///{tmp_path}/db.sqlite", tmp_path / "servers", **SETTINGS
    ) as pair:
        for name in PLUGINS:
            await install(pair.clients, zips[name].read_bytes())
        for index, case in enumerate(CASES):
            local = await through_harness(case, zips[case.plugin])
            remote = await through_server(pair, case, index)
            where = f"{case.plugin}/{case.policy}"
            assert local.outcomes == case.expected, (where, local)
            assert remote.outcomes == case.expected, (where, remote)
            assert local.errors == remote.errors, where
            for outcome, error in zip(local.outcomes, local.errors, strict=True):
                assert bool(error) == (outcome in ("retried", "blocked", "parked")), where
            if "blocked" in case.expected:
                # The server goes on retrying: at least as many attempts as the harness made.
                assert remote.failures[0] >= local.failures[0] == case.attempts, where
                assert local.failures[1:] == remote.failures[1:], where
            else:
                assert local.failures == remote.failures, where
            if case.plugin == "retry-after":
                assert local.next_wait == 20.0, local
                assert remote.next_wait is not None and 15.0 < remote.next_wait <= 20.5, remote


FORM_PLUGIN = """
from listener_common import ListenerPlugin, params

class P(ListenerPlugin):
    @classmethod
    def params(cls):
        return [
            params.Input("url", title="URL", required=True),
            params.InputNumber("timeout", title="Timeout", min=1, max=60, value=10),
            params.Select("level", title="Level", options=["info", "warn"], value="info"),
            params.Switch("enabled", title="Enabled", value=True),
            params.Checkbox("types", title="Types", options=["a", "b"]),
            params.Password("token", title="Token"),
        ]
"""


@pytest.mark.parametrize(
    "given",
    [
        {},
        {"url": "http://x", "timeout": "0"},
        {"url": "http://x", "timeout": "ten", "level": "debug"},
        {"url": " ", "enabled": "maybe", "types": "a,c", "extra": "1"},
    ],
)
async def test_params_are_refused_alike(tmp_path: Path, given: dict[str, str]) -> None:
    data = make_zip({"p.py": FORM_PLUGIN}, manifest("form", "p:P"))
    (tmp_path / "form.zip").write_bytes(data)
    with pytest.raises(ParamValidationError) as local:
        await PluginHarness(tmp_path / "form.zip", given).run([sample_event("TASK_FAIL")])
    async with running_pair(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite", tmp_path) as pair:
        await install(pair.clients, data)
        with pytest.raises(grpc.aio.AioRpcError) as remote:
            await create_instance(pair.clients, "form-1", "plugins/form", given, ["TASK_FAIL"])
    assert remote.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert remote.value.details() == str(local.value)
