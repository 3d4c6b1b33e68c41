"""A plugin that leaks on purpose is reported by the alert server's GetStatus, not kept
silently; the report goes away once the leak does."""

from __future__ import annotations

import asyncio
import gc
import sys
import types
from pathlib import Path

import pytest

from alert_server import leak_watch
from listener.v1 import event_service_pb2, listener_instance_pb2, plugin_pb2
from listener_core import server as grpc_server
from tests.isolation import host_cache
from tests.isolation.support import (
    alert_status,
    create_instance,
    install,
    recorder_package,
    sqlite_pair,
)
from tests.support.jsonl import read_jsonl
from tests.support.samples import make_zip, manifest, sample_event
from tests.support.servers import eventually

LEAKY = """
import json, threading
from listener_common import ListenerPlugin, params
from tests.isolation import host_cache

def spin():
    while not host_cache.RELEASE.wait(0.02):
        pass

class Leaky(ListenerPlugin):
    @classmethod
    def params(cls):
        return [params.Input("logFile", title="Log file", required=True)]

    async def open(self, config):
        self.path = config["logFile"]
        if MODE == "thread":
            threading.Thread(target=spin, name="leaky-thread", daemon=True).start()
        else:
            host_cache.CACHE.append(self)

    async def on_event(self, event):
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"id": event.id}) + "\\n")
"""


@pytest.mark.parametrize(
    ("mode", "finding"),
    [
        ("thread", "daemon thread 'leaky-thread' still runs _listener_plugins.leaky_1_0_0_"),
        ("cache", "held by host module global tests.isolation.host_cache.CACHE"),
    ],
)
async def test_a_leaking_plugin_is_reported_until_the_leak_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, finding: str
) -> None:
    monkeypatch.setattr(leak_watch, "LEAK_CHECK_MAX", 0.5)  # re-check often, for the test
    host_cache.RELEASE.clear()
    out = tmp_path / "out.jsonl"
    package = make_zip({"leaky.py": f"MODE = {mode!r}\n" + LEAKY}, manifest("leaky", "leaky:Leaky"))
    try:
        async with sqlite_pair(tmp_path) as pair:
            c = pair.clients
            await install(c, package)
            await install(c, recorder_package("1"))  # a well-behaved neighbour
            await create_instance(c, "leaky", "leaky", {"logFile": str(out)})
            await c.events.PublishEvent(
                event_service_pb2.PublishEventRequest(event=sample_event("task_fail"))
            )
            await eventually(lambda: len(read_jsonl(out)) == 1)  # open ran, the leak is made
            await c.instances.DeleteListenerInstance(
                listener_instance_pb2.DeleteListenerInstanceRequest(name="listenerInstances/leaky")
            )
            await c.plugins.DeletePlugin(plugin_pb2.DeletePluginRequest(name="plugins/leaky"))
            assert not [n for n in sys.modules if n.startswith("_listener_plugins.leaky")]

            async def leaked() -> list[str]:
                status = await alert_status(pair)
                return [x for p in status.leaked_plugins for x in p.leaks]

            leaks = await eventually(leaked, timeout=60)
            assert any(finding in leak for leak in leaks), leaks
            status = await alert_status(pair)
            assert [(p.plugin_id, p.version) for p in status.leaked_plugins] == [("leaky", "1.0.0")]
            assert [p.plugin_id for p in status.plugins] == ["recorder"]  # only leaky reported

            host_cache.RELEASE.set()
            host_cache.CACHE.clear()
            await eventually(lambda: _no_leaks(pair), timeout=60)
    finally:
        host_cache.RELEASE.set()
        host_cache.CACHE.clear()


async def _no_leaks(pair: object) -> bool:
    status = await alert_status(pair)  # type: ignore[arg-type]
    return not status.leaked_plugins


async def test_a_well_behaved_plugin_leaves_nothing_after_updates_and_uninstall(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"
    async with sqlite_pair(tmp_path) as pair:
        c = pair.clients
        await install(c, recorder_package("1"))
        await create_instance(c, "rec", "recorder", {"logFile": str(out)})
        await c.events.PublishEvent(
            event_service_pb2.PublishEventRequest(event=sample_event("task_fail"))
        )
        await eventually(lambda: len(read_jsonl(out)) == 1)
        await c.plugins.UpdatePlugin(
            plugin_pb2.UpdatePluginRequest(
                plugin=plugin_pb2.Plugin(name="plugins/recorder"), package=recorder_package("2")
            )
        )
        await c.instances.DeleteListenerInstance(
            listener_instance_pb2.DeleteListenerInstanceRequest(name="listenerInstances/rec")
        )
        await c.plugins.DeletePlugin(plugin_pb2.DeletePluginRequest(name="plugins/recorder"))
        host = pair.alert.host
        await eventually(lambda: not host.leak_watch.pending, timeout=60)  # every version checked
        assert host.leak_watch.reports() == []
        assert not (await alert_status(pair)).leaked_plugins
        assert not list(
            host.packages.cache.directory.glob("*.zip")
        )  # the cache let go of both files


async def test_the_leak_watch_collection_scans_only_what_came_after_start(tmp_path: Path) -> None:
    """Installing a plugin unloads its probed copy, and the leak watch then runs a full
    garbage collection: over the whole start-up heap, it stalled every delivery for ~65 ms.
    The start-up heap is frozen, so the collection sees only what came later, and the
    plugins loaded after start stay collectable (the test above)."""
    out = tmp_path / "out.jsonl"
    async with sqlite_pair(tmp_path) as pair:
        c = pair.clients
        await install(c, recorder_package("1"))
        await create_instance(c, "rec", "recorder", {"logFile": str(out)})
        await eventually(lambda: not pair.alert.host.leak_watch.pending)  # the probe was checked
        frozen, scanned = gc.get_freeze_count(), len(gc.get_objects())
        assert frozen > 3 * scanned, (frozen, scanned)
        loaded = [
            m
            for m in gc.get_objects()
            if isinstance(m, types.ModuleType)
            and m.__name__.startswith("_listener_plugins.recorder")
        ]
        assert loaded, "the plugin loaded after start is not frozen: it can be collected"


async def test_a_restart_collects_once_every_runner_of_its_start_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the start builds for its instances (their runners) is new to the collector: the
    alert server collects it once before it serves, not in a full pass some seconds into
    its work (an event-loop stall of 160 ms with 10,000 instances)."""
    out = tmp_path / "out.jsonl"
    async with sqlite_pair(tmp_path) as pair:
        await install(pair.clients, recorder_package("1"))
        for name in ("a", "b"):
            await create_instance(pair.clients, name, "recorder", {"logFile": str(out)})
    running: list[list[str]] = []

    def collect() -> None:
        running.append(
            sorted(
                t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("delivery:")
            )
        )

    monkeypatch.setattr(grpc_server, "collect_start_up_garbage", collect)
    async with sqlite_pair(tmp_path) as pair:  # the same store: both instances start again
        assert running == [["delivery:a", "delivery:b"]]
        assert set(pair.alert.host.runners) == {"a", "b"}
