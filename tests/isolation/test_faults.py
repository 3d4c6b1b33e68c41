"""In-process faults stay with the event and the instance that caused them.

A handler that raises fails that event only (it is retried; the events around it are
delivered once each); one that hangs is cut off by ``handler_timeout`` and counted as a
failure; a plain ``def`` handler runs in a worker thread, so a blocking plugin never stalls
the event loop the other instances share.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.v1 import event_service_pb2
from tests.isolation.support import (
    create_instance,
    get_instance,
    install,
    recorder_package,
    sqlite_pair,
)
from tests.support.jsonl import read_jsonl
from tests.support.samples import make_zip, manifest, sample_event
from tests.support.servers import Clients, eventually

# Misbehaves on events of task "task-2" while the flag file exists, in the way MODE says.
FAULTY = """
import asyncio, json, os, time
from listener_common import ListenerPlugin, params

class Faulty(ListenerPlugin):
    @classmethod
    def params(cls):
        return [params.Input("logFile", title="Log file", required=True),
                params.Input("flag", title="Misbehave while this file exists", required=True)]

    async def open(self, config):
        self.path, self.flag = config["logFile"], config["flag"]

    def record(self, event):
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"id": event.id, "task": event.task_name}) + "\\n")

    def misbehaves(self, event):
        return event.task_name == "task-2" and os.path.exists(self.flag)

    if MODE == "sync-hang":
        def on_event(self, event):  # plain def: runs in a worker thread, cannot be killed
            if self.misbehaves(event):
                time.sleep(1.0)
                return  # abandoned by then: records nothing, so a missed timeout shows
            self.record(event)
    else:
        async def on_event(self, event):
            if self.misbehaves(event):
                if MODE == "raise":
                    raise ValueError("refused task-2")
                await asyncio.sleep(3600)  # hang
            self.record(event)
"""

SLOW_SYNC = """
import json, os, time
from listener_common import ListenerPlugin, params

class SlowSync(ListenerPlugin):
    @classmethod
    def params(cls):
        return [
            params.Input("logFile", title="Log file", required=True),
            params.Input("gate", title="Blocks while this file exists", required=True),
        ]

    def open(self, config):
        self.path, self.gate = config["logFile"], config["gate"]

    def on_event(self, event):  # plain def: the SDK runs it in a worker thread
        open(self.path + ".entered", "a").close()
        while os.path.exists(self.gate):  # blocks its thread, as a slow client library would
            time.sleep(0.01)
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"id": event.id}) + "\\n")
"""


async def publish(clients: Clients, count: int) -> list[str]:
    reply = await clients.events.PublishEvents(
        event_service_pb2.PublishEventsRequest(
            events=[sample_event("task_fail", n) for n in range(1, count + 1)]
        )
    )
    return [e.id for e in reply.events]


@pytest.mark.parametrize(
    ("mode", "error"),
    [("raise", "ValueError: refused task-2"), ("hang", "timed out"), ("sync-hang", "timed out")],
)
async def test_a_failing_handler_fails_only_its_event(
    tmp_path: Path, mode: str, error: str
) -> None:
    out, flag = tmp_path / "out.jsonl", tmp_path / "flag"
    flag.touch()
    package = make_zip(
        {"faulty.py": f"MODE = {mode!r}\n" + FAULTY}, manifest("faulty", "faulty:Faulty")
    )
    async with sqlite_pair(tmp_path, handler_timeout=0.4) as pair:
        c = pair.clients
        await install(c, package)
        await install(c, recorder_package("1"))
        await create_instance(c, "faulty", "faulty", {"logFile": str(out), "flag": str(flag)})
        await create_instance(c, "other", "recorder", {"logFile": str(tmp_path / "other.jsonl")})
        ids = await publish(c, 3)

        inst = await eventually(lambda: _failing(c, "faulty"), timeout=60, interval=0.05)
        assert error in inst.delivery.last_error and ids[1] in inst.delivery.last_error
        assert [x["id"] for x in read_jsonl(out)] == ids[:1]  # stopped at the failed event
        # Another instance is not held up by it.
        await eventually(lambda: len(read_jsonl(tmp_path / "other.jsonl")) == 3)

        flag.unlink()
        await eventually(lambda: len(read_jsonl(out)) >= 3, timeout=60)
        await eventually(lambda: _settled(c, "faulty"))
        # Each event exactly once: the one before the failure is not delivered again.
        assert [x["id"] for x in read_jsonl(out)] == ids


async def _failing(clients: Clients, instance_id: str) -> object:
    inst = await get_instance(clients, instance_id)
    return inst if inst.delivery.attempts >= 1 and inst.delivery.last_error else None


async def _settled(clients: Clients, instance_id: str) -> bool:
    inst = await get_instance(clients, instance_id)
    return inst.delivery.attempts == 0 and inst.delivery.pending_count == 0


async def test_a_blocking_sync_handler_never_stalls_other_instances(tmp_path: Path) -> None:
    """While one instance's plain ``def`` handler blocks its thread, another instance delivers
    everything: judged by what each has delivered while the gate is shut, not by timings."""
    slow_out, fast_out, gate = tmp_path / "slow.jsonl", tmp_path / "fast.jsonl", tmp_path / "gate"
    gate.touch()
    try:
        async with sqlite_pair(tmp_path, handler_timeout=600) as pair:
            c = pair.clients
            await install(c, make_zip({"slow.py": SLOW_SYNC}, manifest("slow", "slow:SlowSync")))
            await install(c, recorder_package("1"))
            params = {"logFile": str(slow_out), "gate": str(gate)}
            await create_instance(c, "slow", "slow", params)
            await create_instance(c, "fast", "recorder", {"logFile": str(fast_out)})
            ids = await publish(c, 12)
            # The slow handler is inside its first event, holding its thread...
            await eventually(lambda: Path(f"{slow_out}.entered").exists())
            # ...and the other instance delivers every event meanwhile.
            fast = await eventually(
                lambda: (got := read_jsonl(fast_out)) and len(got) == 12 and got
            )
            assert read_jsonl(slow_out) == []  # still held: nobody waited for it
            gate.unlink()
            slow = await eventually(
                lambda: (got := read_jsonl(slow_out)) and len(got) == 12 and got
            )
    finally:
        gate.unlink(missing_ok=True)  # a failed step must not leave a thread blocked
    assert [x["id"] for x in fast] == ids and [x["id"] for x in slow] == ids
