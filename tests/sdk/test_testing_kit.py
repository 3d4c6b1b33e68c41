"""listener_common.testing's samples, the generated event reference in the docs, and
``listenerctl plugin test`` / ``plugin new`` from the shell."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from listener_common import ListenerPlugin, events
from listener_common.events import EVENT_CLASSES, EventType, from_dict
from listener_common.reference import BEGIN, END, event_reference
from listener_common.testing import run_plugin, sample_event, sample_events
from tests.support.servers import REPO

LISTENERCTL = [sys.executable, "-m", "listener_cli"]


def test_samples_cover_all_13_types_with_every_field_set() -> None:
    samples = sample_events()
    assert [s.type for s in samples] == list(EventType) and len(samples) == 13
    assert len({s.id for s in samples}) == 13
    assert [s.sequence for s in samples] == sorted(s.sequence for s in samples)
    for sample in samples:
        assert type(sample) is EVENT_CLASSES[sample.type]
        for f in dataclasses.fields(sample):
            value = getattr(sample, f.name)
            if f.name == "end_time" and sample.type.value.endswith("_START"):
                assert value is None  # still running
                continue
            if f.name == "traceparent":
                assert value == ""  # as from servers that do not trace (the default)
                continue
            # Realistic: every field carries a value, except flags that are false on purpose.
            assert value not in (None, "", []) and (value != 0 or f.name in _ZERO_OK), (
                sample.type,
                f.name,
            )
        assert from_dict(sample.to_dict()) == sample  # what a process-isolated plugin gets


_ZERO_OK = {"recovery", "timeout", "delay_time", "pre_task_code", "pre_task_version"}


def test_sample_fields_can_be_replaced_and_unknown_ones_are_refused() -> None:
    event = sample_event("TASK_FAIL", task_name="extract", sequence=7)
    assert isinstance(event, events.TaskFail) and event.task_name == "extract"
    assert event.sequence == 7
    with pytest.raises(TypeError, match="no field"):
        sample_event("TASK_FAIL", workflow_nam="x")
    with pytest.raises(ValueError, match="unknown event type"):
        sample_event("TASK_EXPLODED")


def test_docs_hold_the_generated_event_reference() -> None:
    text = (REPO / "docs" / "plugins.md").read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] + "\n" == event_reference(), (
        "docs/plugins.md's event reference is stale: replace it with the output of "
        "`python -m listener_common.reference`"
    )
    for cls in EVENT_CLASSES.values():
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in text


def test_a_sync_hanging_handler_times_out_and_the_batch_order_holds() -> None:
    class Recorder(ListenerPlugin):
        seen: list[int] = []

        async def on_event(self, event: events.ListenerEvent) -> None:
            if event.type is EventType.TASK_START:
                raise TimeoutError  # a bare TimeoutError is reported like the timeout
            Recorder.seen.append(event.sequence)

    batch = sample_events("TASK_END", "TASK_FAIL", "TASK_START", "TASK_END")
    report = run_plugin(Recorder, batch, policy="park", park_after=1)
    assert report.outcomes() == ["delivered", "delivered", "parked", "delivered"]
    assert Recorder.seen == [batch[0].sequence, batch[1].sequence, batch[3].sequence]
    assert report.results[2].error.endswith("handler timed out")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LISTENERCTL, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_plugin_new_and_plugin_test_from_the_shell(tmp_path: Path) -> None:
    made = cli("plugin", "new", "pager-duty", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    project = tmp_path / "pager-duty"
    assert (project / "pager_duty_listener.py").is_file()
    assert (project / "tests" / "test_pager_duty_listener.py").is_file()
    again = cli("plugin", "new", "pager-duty", cwd=tmp_path)
    assert again.returncode == 4 and "already exists" in again.stderr

    out = tmp_path / "out.jsonl"
    ran = cli(
        "plugin", "test", "pager-duty", "--event", "TASK_FAIL", "--event", "WORKFLOW_FAIL",
        "--param", f"outFile={out}", cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.count(" delivered") == 2, ran.stdout
    assert len(out.read_text().splitlines()) == 2

    missing = cli("plugin", "test", "pager-duty", cwd=tmp_path)
    assert missing.returncode == 4 and "outFile: is required" in missing.stderr

    # A failing plugin: exit 1, the outcome and the error as the alert server records it.
    module = project / "pager_duty_listener.py"
    module.write_text(
        module.read_text().replace(
            "    async def on_task_fail(self, event: events.TaskFail) -> None:\n",
            "    async def on_task_fail(self, event: events.TaskFail) -> None:\n"
            '        raise ConnectionError("pager unreachable")\n',
        )
    )
    failed = cli(
        "--json", "plugin", "test", "pager-duty", "--event", "TASK_FAIL", "--policy", "park",
        "--park-after", "2", "--param", f"outFile={out}", cwd=tmp_path,
    )  # fmt: skip
    assert failed.returncode == 1, failed.stderr
    report = json.loads(failed.stdout)
    [result] = report["events"]
    assert result["outcome"] == "parked" and result["failures"] == 2
    assert result["error"].endswith("ConnectionError: pager unreachable")
