"""Process isolation: the plugin runs in a child speaking a framed protocol with the host.

A segfault or ``os._exit`` in a handler ends only the child: the alert server (this very
test process, for the in-process pair) keeps running, the instance records the failure, the
event is retried, and a new child takes over after a backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from alert_server.child_process import ProcessSettings, child_command, child_env
from alert_server.convert import to_sdk_event
from alert_server.loader import LoadedPackage, PackageLoader, PluginLoadError
from alert_server.plugin_protocol import decode_all, encode
from alert_server.process_plugin import ProcessPlugin
from event_store.events import StoredEvent
from listener.v1 import event_pb2, event_service_pb2, plugin_pb2
from listener_common import events
from listener_common.errors import DeliveryError
from listener_common.package import inspect_package
from tests.isolation.support import (
    alert_status,
    create_instance,
    get_instance,
    get_plugin,
    install,
    recorder_package,
    sqlite_pair,
)
from tests.support.jsonl import read_jsonl
from tests.support.samples import PAYLOAD_FIELDS, all_type_events, make_zip, manifest, sample_event
from tests.support.servers import REPO, eventually, recorded

# Crashes the way CRASH says on the first attempt of task-2 (a marker file remembers it).
CRASHER = """
import ctypes, json, os
from listener_common import ListenerPlugin, params

class Crasher(ListenerPlugin):
    @classmethod
    def params(cls):
        return [params.Input("logFile", title="Log file", required=True)]

    async def open(self, config):
        self.path = config["logFile"]

    async def on_event(self, event):
        marker = self.path + ".crashed"
        if event.task_name == "task-2" and not os.path.exists(marker):
            open(marker, "w").close()
            if CRASH == "segfault":
                ctypes.string_at(0)
            os._exit(1)
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"id": event.id, "pid": os.getpid()}) + "\\n")
"""

# Misbehaves in the ways the proxy must turn into clean errors.
TRICKY = """
import asyncio, os, sys, time
from listener_common import ListenerPlugin
from listener_common.errors import DeliveryError

class Tricky(ListenerPlugin):
    async def open(self, config):
        print("hello on stdout from the child")        # must not corrupt the frames
        print("hello on stderr from the child", file=sys.stderr)
        self.files = []

    async def on_event(self, event):
        what = event.task_name
        if what == "allocate":
            self.blob = bytearray(1024 * 2**20)
        elif what == "files":
            for _ in range(64):
                self.files.append(open(os.devnull))
        elif what == "later":
            raise DeliveryError("rate limited", retry_after=7.5, permanent=True)
        elif what == "hang":
            time.sleep(3600)
        elif what == "pid":
            raise RuntimeError(str(os.getpid()))
"""


def task_event(name: str, sequence: int = 1) -> events.ListenerEvent:
    return events.from_dict(
        {"id": f"e{sequence}", "sequence": sequence, "type": "TASK_FAIL", "task_name": name}
    )


def write_package(tmp_path: Path, data: bytes) -> tuple[Any, Path]:
    info = inspect_package(data)
    path = tmp_path / f"{info.sha256}.zip"
    path.write_bytes(data)
    return info, path


def load_process(tmp_path: Path, settings: ProcessSettings) -> LoadedPackage:
    info, path = write_package(
        tmp_path, make_zip({"tricky.py": TRICKY}, manifest("tricky", "tricky:Tricky"))
    )
    return PackageLoader(settings).load("tricky", info, path, isolation="process")


def test_events_round_trip_through_the_wire_format() -> None:
    """What crosses the pipe is ``to_dict()`` JSON, rebuilt by ``from_dict``: all 13 types."""
    import json

    for n, (field, message) in enumerate(zip(PAYLOAD_FIELDS, all_type_events(), strict=True)):
        stored = StoredEvent(
            n + 1,
            f"id-{n}",
            event_pb2.EventType.Value("EVENT_TYPE_" + field.upper()),
            datetime(2024, 5, 1, 12, 0, n, 123000, tzinfo=UTC),
            message.SerializeToString(),
        )
        event = to_sdk_event(stored)
        rebuilt = events.from_dict(json.loads(json.dumps(event.to_dict())))
        assert rebuilt == event, field
        assert type(rebuilt) is type(event)


async def test_the_child_reports_errors_limits_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alert_server.process_plugin")
    settings = ProcessSettings(memory_mb=256, max_files=32, call_timeout=1.0, restart_base=0.1)
    started = time.perf_counter()
    loaded = load_process(tmp_path, settings)
    describe_ms = (time.perf_counter() - started) * 1000
    assert loaded.isolation == "process" and issubclass(loaded.plugin_class, ProcessPlugin)
    assert not [n for n in sys.modules if n.startswith(loaded.prefix)]
    plugin = loaded.plugin_class()
    started = time.perf_counter()
    await plugin.open({})
    open_ms = (time.perf_counter() - started) * 1000
    assert isinstance(plugin, ProcessPlugin)
    pid = plugin.child_pid
    assert pid is not None and pid != os.getpid()
    try:
        # Limits: RLIMIT_AS and RLIMIT_NOFILE hold in the child; it survives both.
        with pytest.raises(Exception) as mem:  # the type is checked below
            await plugin.on_event(task_event("allocate"))
        assert type(mem.value).__name__ == "MemoryError"
        with pytest.raises(Exception, match="Too many open files"):
            await plugin.on_event(task_event("files"))
        # DeliveryError keeps retry_after and permanent across the pipe.
        with pytest.raises(DeliveryError) as later:
            await plugin.on_event(task_event("later"))
        assert (later.value.retry_after, later.value.permanent) == (7.5, True)
        with pytest.raises(Exception, match=str(pid)):
            await plugin.on_event(task_event("pid"))  # still the same child
        # A hung handler is cut off at the deadline and its process killed.
        with pytest.raises(TimeoutError, match="killed"):
            await plugin.on_event(task_event("hang"))
        assert plugin.child_pid is None
        await asyncio.sleep(0.15)  # the restart backoff
        with pytest.raises(Exception, match=r"^\d+$") as other:
            await plugin.on_event(task_event("pid"))
        assert int(str(other.value)) != pid  # a new child, opened with the same params
    finally:
        await plugin.close()
    assert plugin.child_pid is None
    logged = caplog.text
    assert "hello on stdout from the child" in logged
    assert "hello on stderr from the child" in logged
    print(
        f"\n[figures] process isolation: load (one-shot child) {describe_ms:.0f} ms, "
        f"open (start child + handshake + load + open) {open_ms:.0f} ms"
    )


def test_the_handshake_refuses_another_protocol_version() -> None:
    done = subprocess.run(
        child_command(ProcessSettings()),
        input=encode({"id": 1, "op": "hello", "protocol": 99}),
        capture_output=True,
        timeout=30,
        env=child_env(),
        check=False,
    )
    [reply] = decode_all(done.stdout)
    assert reply["ok"] is False and "protocol 99 not supported" in reply["error"]["message"]


def test_a_package_that_kills_its_child_at_import_is_refused(tmp_path: Path) -> None:
    data = make_zip(
        {"boom.py": "import os\nos._exit(3)\n"},
        manifest("boom", "boom:P", extra='isolation = "process"\n'),
    )
    info, path = write_package(tmp_path, data)
    with pytest.raises(PluginLoadError, match="exited with status 3"):
        PackageLoader().load("boom", info, path)


HOST_SCRIPT = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from alert_server.loader import PackageLoader
from listener_common import events
from listener_common.package import inspect_package

async def main():
    path = Path(sys.argv[1])
    loaded = PackageLoader().load("tricky", inspect_package(path.read_bytes()), path,
                                  isolation="process")
    plugin = loaded.plugin_class()
    await plugin.open({{}})
    print(plugin.child_pid, flush=True)
    # The child blocks in a sync sleep: only its parent watchdog can notice the host die.
    await plugin.on_event(events.from_dict(
        {{"id": "e", "sequence": 1, "type": "TASK_FAIL", "task_name": "hang"}}))

asyncio.run(main())
"""


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # exited, waiting for init to reap it


def test_the_child_exits_when_the_host_dies(tmp_path: Path) -> None:
    _, path = write_package(
        tmp_path, make_zip({"tricky.py": TRICKY}, manifest("tricky", "tricky:Tricky"))
    )
    script = tmp_path / "host.py"
    script.write_text(HOST_SCRIPT.format(repo=str(REPO)))
    host = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert host.stdout is not None
        child = int(host.stdout.readline())
        time.sleep(0.3)
        assert not _gone(child)
        host.send_signal(signal.SIGKILL)
        host.wait(10)
        deadline = time.monotonic() + 5
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(child), "the plugin child outlived its host"
    finally:
        if host.poll() is None:
            host.kill()


async def test_process_isolation_through_the_api(tmp_path: Path) -> None:
    manifest_out, admin_out = tmp_path / "manifest.jsonl", tmp_path / "admin.jsonl"
    async with sqlite_pair(tmp_path) as pair:
        c = pair.clients
        # Asked for by the manifest.
        await install(c, recorder_package("1", isolation="process", name="inproc"))
        # Asked for by the admin, for a package whose manifest says namespace.
        await install(
            c, recorder_package("1", name="byadmin"), isolation=plugin_pb2.ISOLATION_PROCESS
        )
        assert (await get_plugin(c, "byadmin")).isolation == plugin_pb2.ISOLATION_PROCESS
        await create_instance(c, "a", "inproc", {"logFile": str(manifest_out)})
        await create_instance(c, "b", "byadmin", {"logFile": str(admin_out)})
        reply = await c.events.PublishEvents(
            event_service_pb2.PublishEventsRequest(
                events=[sample_event("task_fail", n) for n in range(1, 4)]
            )
        )
        for out in (manifest_out, admin_out):
            lines = await eventually(lambda out=out: len(got := read_jsonl(out)) >= 3 and got)
            assert [x["id"] for x in lines] == [e.id for e in reply.events]
            assert {x["pid"] for x in lines} != {os.getpid()}
        status = await alert_status(pair)
        assert {(p.plugin_id, p.isolation) for p in status.plugins} == {
            ("inproc", "process"),
            ("byadmin", "process"),
        }
        assert not [n for n in sys.modules if n.startswith("_listener_plugins.byadmin")]


@pytest.mark.parametrize(("crash", "how"), [("segfault", "SIGSEGV"), ("exit", "status 1")])
async def test_a_crashing_handler_leaves_the_alert_server_running(
    tmp_path: Path, crash: str, how: str
) -> None:
    out = tmp_path / "out.jsonl"
    package = make_zip(
        {"crasher.py": f"CRASH = {crash!r}\n" + CRASHER},
        manifest("crasher", "crasher:Crasher", extra='isolation = "process"\n'),
    )
    async with sqlite_pair(tmp_path) as pair:
        c = pair.clients
        await install(c, package)
        await create_instance(c, "crash", "crasher", {"logFile": str(out)})
        reply = await c.events.PublishEvents(
            event_service_pb2.PublishEventsRequest(
                events=[sample_event("task_fail", n) for n in range(1, 4)]
            )
        )
        ids = [e.id for e in reply.events]
        failed = await eventually(lambda: _failed(c, "crash"), timeout=60, interval=0.02)
        assert how in failed.delivery.last_error and ids[1] in failed.delivery.last_error
        lines = await eventually(lambda: len(got := read_jsonl(out)) >= 3 and got, timeout=60)
        assert [x["id"] for x in lines] == ids  # the crashed event retried, none twice
        assert lines[0]["pid"] != lines[1]["pid"] == lines[2]["pid"]  # a new child
        assert os.getpid() not in {x["pid"] for x in lines}
        # Attempts are cleared with the cursor, which is recorded after the file is written.
        inst = await recorded(c, "crash", reply.events[-1].sequence)
        assert inst.delivery.attempts == 0
        assert (await alert_status(pair)).instances[0].instance_id == "crash"  # still serving


async def _failed(clients: Any, instance_id: str) -> Any:
    inst = await get_instance(clients, instance_id)
    return inst if inst.delivery.last_error else None


async def test_switching_isolation_hot_swaps_a_running_instance(tmp_path: Path) -> None:
    """The admin sets isolation on the plugin; the next activation moves instances over."""
    import grpc

    from listener.alert.v1 import plugin_host_pb2, plugin_host_pb2_grpc
    from tests.isolation.support import update

    out = tmp_path / "out.jsonl"
    async with sqlite_pair(tmp_path) as pair:
        c = pair.clients
        plugin = await install(c, recorder_package("1"))
        await create_instance(c, "rec", "recorder", {"logFile": str(out)})

        async def publish(n: int) -> str:
            reply = await c.events.PublishEvent(
                event_service_pb2.PublishEventRequest(event=sample_event("task_fail", n))
            )
            return str(reply.id)

        ids = [await publish(1)]
        await eventually(lambda: len(read_jsonl(out)) == 1)
        await c.plugins.UpdatePlugin(
            plugin_pb2.UpdatePluginRequest(
                plugin=plugin_pb2.Plugin(
                    name="plugins/recorder", isolation=plugin_pb2.ISOLATION_PROCESS
                ),
                update_mask={"paths": ["isolation"]},
            )
        )
        async with grpc.aio.insecure_channel(pair.alert_addr) as channel:
            stub = plugin_host_pb2_grpc.PluginHostServiceStub(channel)
            loaded = await stub.LoadPlugin(
                plugin_host_pb2.LoadPluginRequest(plugin_id="recorder", sha256=plugin.sha256)
            )
        assert loaded.isolation == "process"
        ids.append(await publish(2))
        lines = await eventually(lambda: len(got := read_jsonl(out)) >= 2 and got)
        assert [x["id"] for x in lines] == ids
        assert lines[0]["pid"] == os.getpid() != lines[1]["pid"]
        status = await alert_status(pair)
        assert [(p.plugin_id, p.isolation) for p in status.plugins] == [("recorder", "process")]
        assert not [n for n in sys.modules if n.startswith("_listener_plugins.recorder")]
        # And a new version keeps the admin's choice.
        await update(c, "recorder", recorder_package("2"))
        ids.append(await publish(3))
        lines = await eventually(lambda: len(got := read_jsonl(out)) >= 3 and got)
        assert [(x["id"], x["v"]) for x in lines][2] == (ids[2], "2")
        assert lines[2]["pid"] != os.getpid()
