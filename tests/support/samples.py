"""One realistic published event per type, and a helper to build test plugin packages."""

from __future__ import annotations

import io
import textwrap
import zipfile
from pathlib import Path

from google.protobuf import timestamp_pb2

from listener.v1 import event_pb2

REPO = Path(__file__).resolve().parents[2]

PAYLOAD_FIELDS = [
    f.name for f in event_pb2.ListenerEvent.DESCRIPTOR.oneofs_by_name["payload"].fields
]
TYPE_NAMES = [name.upper() for name in PAYLOAD_FIELDS]


def _ts(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=1_700_000_000 + seconds)


def sample_event(payload_field: str, n: int = 1) -> event_pb2.ListenerEvent:
    """A published event (no id/sequence) with the payload ``payload_field``."""
    event = event_pb2.ListenerEvent(event_time=_ts(n), source="master-1:5678")
    if payload_field == "server_down":
        event.server_down.CopyFrom(
            event_pb2.ServerDown(type="WORKER", host="worker-3:1234", event="REMOVE")
        )
    elif payload_field in ("workflow_added", "workflow_update"):
        getattr(event, payload_field).CopyFrom(
            event_pb2.WorkflowDefinitionChange(
                id=n,
                code=1000 + n,
                name=f"wf-{n}",
                version=2,
                release_state="ONLINE",
                project_code=77,
                project_name="etl",
                user="alice",
                timeout=60,
                execution_type="PARALLEL",
                create_time=_ts(0),
                update_time=_ts(n),
                task_definitions=[
                    event_pb2.TaskDefinition(
                        code=5000 + n, name="extract", version=1, task_type="SHELL"
                    )
                ],
                task_relations=[
                    event_pb2.TaskRelation(post_task_code=5000 + n, post_task_version=1)
                ],
            )
        )
    elif payload_field == "workflow_removed":
        event.workflow_removed.CopyFrom(
            event_pb2.WorkflowRemoved(
                project_code=77,
                project_name="etl",
                owner="alice",
                workflow_definition_code=1000 + n,
                workflow_name=f"wf-{n}",
                delete_time=_ts(n),
            )
        )
    elif payload_field.startswith("workflow_"):
        getattr(event, payload_field).CopyFrom(
            event_pb2.WorkflowRun(
                project_code=77,
                project_name="etl",
                owner="alice",
                workflow_instance_id=9000 + n,
                workflow_definition_code=1000 + n,
                workflow_name=f"wf-{n}",
                command_type="START_PROCESS",
                state="RUNNING_EXECUTION",
                run_times=1,
                start_time=_ts(n),
                host="master-1",
            )
        )
    elif payload_field in ("task_added", "task_update"):
        getattr(event, payload_field).CopyFrom(
            event_pb2.TaskDefinitionChange(
                code=5000 + n,
                name=f"task-{n}",
                version=1,
                project_code=77,
                project_name="etl",
                task_type="SHELL",
                task_params='{"rawScript":"echo hi"}',
                worker_group="default",
            )
        )
    elif payload_field == "task_removed":
        event.task_removed.CopyFrom(
            event_pb2.TaskRemoved(
                task_code=5000 + n,
                task_name=f"task-{n}",
                task_type="SHELL",
                project_code=77,
                project_name="etl",
                delete_time=_ts(n),
            )
        )
    else:
        getattr(event, payload_field).CopyFrom(
            event_pb2.TaskRun(
                project_code=77,
                project_name="etl",
                owner="alice",
                workflow_instance_id=9000 + n,
                workflow_definition_code=1000 + n,
                workflow_name=f"wf-{n}",
                task_instance_id=70000 + n,
                task_code=5000 + n,
                task_name=f"task-{n}",
                task_type="SHELL",
                task_state="FAILURE",
                start_time=_ts(n),
                host="worker-1",
                log_path=f"/logs/{n}.log",
            )
        )
    return event


def all_type_events() -> list[event_pb2.ListenerEvent]:
    return [sample_event(field, i + 1) for i, field in enumerate(PAYLOAD_FIELDS)]


def event_type(name: str) -> int:
    return event_pb2.EventType.Value("EVENT_TYPE_" + name)


def make_zip(files: dict[str, str], manifest: str | None = None) -> bytes:
    """A plugin package from source texts; ``manifest`` None means none at all."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if manifest is not None:
            zf.writestr("listener-plugin.toml", textwrap.dedent(manifest))
        for name, text in files.items():
            zf.writestr(name, textwrap.dedent(text))
    return buf.getvalue()


def manifest(name: str, entry: str, version: str = "1.0.0", extra: str = "") -> str:
    return f'name = "{name}"\nversion = "{version}"\nentry = "{entry}"\nsdk = ">=1,<2"\n{extra}'


def logger_package() -> bytes:
    """The shipped logger plugin, built from plugins/logger with the SDK's builder."""
    import tempfile

    from listener_common.package import build_package

    with tempfile.TemporaryDirectory() as out:
        return build_package(REPO / "plugins" / "logger", Path(out)).read_bytes()


# A plugin that records to a JSON-lines file like the logger, but sleeps per event and can
# be told to fail: used where a test needs events to stay pending or to fail on purpose.
SLOW_PLUGIN = """
import asyncio, json, os
from listener_common import ListenerPlugin, params

class SlowListener(ListenerPlugin):
    @classmethod
    def params(cls):
        return [params.Input("logFile", title="Log file", required=True),
                params.InputNumber("delayMs", title="Delay per event (ms)", value=0),
                params.Input("failFlag", title="Fail while this file exists", value="")]

    async def open(self, config):
        self.path = config["logFile"]
        self.delay = (config.get("delayMs") or 0) / 1000
        self.flag = config.get("failFlag") or ""

    async def on_event(self, event):
        if self.flag and os.path.exists(self.flag):
            raise RuntimeError("destination down (flag file present)")
        await asyncio.sleep(self.delay)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(event.to_dict()) + "\\n")
"""


def slow_package(version: str = "1.0.0") -> bytes:
    return make_zip(
        {"slow_listener.py": SLOW_PLUGIN}, manifest("slow", "slow_listener:SlowListener", version)
    )


# Records every attempt and fails the first ``failCount`` attempts (counted across events),
# or every attempt of an event whose task_name is in ``failTasks``: for backoff, park and
# replay tests.
FLAKY_PLUGIN = """
import json, os, time
from listener_common import ListenerPlugin, params

class FlakyListener(ListenerPlugin):
    @classmethod
    def params(cls):
        return [params.Input("logFile", title="Log file", required=True),
                params.InputNumber("failCount", title="Fail this many attempts first", value=0),
                params.Input("failTasks", title="Always fail these task names", value="")]

    async def open(self, config):
        self.path = config["logFile"]
        self.fail_count = int(config.get("failCount") or 0)
        self.fail_tasks = set(filter(None, (config.get("failTasks") or "").split(",")))

    async def on_event(self, event):
        with open(self.path + ".attempts", "a") as fh:
            fh.write(json.dumps({"id": event.id, "t": time.time()}) + "\\n")
        with open(self.path + ".attempts") as fh:
            attempts = sum(1 for _ in fh)
        if attempts <= self.fail_count:
            raise RuntimeError(f"planned failure {attempts} of {self.fail_count}")
        if getattr(event, "task_name", "") in self.fail_tasks:
            raise RuntimeError(f"task {event.task_name} always fails")
        with open(self.path, "a") as fh:
            fh.write(json.dumps(event.to_dict()) + "\\n")
"""


def flaky_package(version: str = "1.0.0") -> bytes:
    return make_zip(
        {"flaky_listener.py": FLAKY_PLUGIN},
        manifest("flaky", "flaky_listener:FlakyListener", version),
    )
