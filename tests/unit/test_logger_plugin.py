"""The shipped logger plugin writes exactly one JSON line per delivered event."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from listener_common import ListenerPlugin, events, params
from listener_common.package import build_package, inspect_package
from listener_common.plugin import deliver_batch, supports_batch

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plugins" / "logger"


@pytest.fixture(scope="module")
def logger_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "logger_listener_under_test", PLUGIN_DIR / "logger_listener.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:  # no __pycache__ in the plugin's source tree
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return module


def make_event(n: int, event_type: str = "TASK_FAIL") -> events.ListenerEvent:
    return events.from_dict(
        {
            "id": f"ev-{n}",
            "sequence": n,
            "type": event_type,
            "event_time": "2024-01-02T03:04:05.123Z",
            "source": "master-1",
            "payload": {"task_name": f"task-{n}", "task_instance_id": str(70000 + n)},
        }
    )


def expected_line(event: events.ListenerEvent) -> str:
    return json.dumps(event.to_dict(), separators=(",", ":")) + "\n"


async def opened(module: ModuleType, config: dict[str, Any]) -> Any:
    plugin = module.LoggerListener()
    form = params.form_json(module.LoggerListener)
    await plugin.open(params.typed_config(form, {k: str(v) for k, v in config.items()}))
    return plugin


def test_params_form(logger_module: ModuleType) -> None:
    form = params.form_json(logger_module.LoggerListener)
    assert [(f["field"], f["type"], f["validate"]["required"]) for f in form] == [
        ("logFile", "input", True),
        ("fsync", "switch", False),
    ]
    assert params.typed_config(form, {"logFile": "/x"}) == {"logFile": "/x", "fsync": False}
    assert issubclass(logger_module.LoggerListener, ListenerPlugin)


async def test_writes_one_line_per_event(tmp_path: Path, logger_module: ModuleType) -> None:
    log_file = tmp_path / "deep" / "er" / "events.jsonl"
    plugin = await opened(logger_module, {"logFile": log_file})
    first, second = make_event(1), make_event(2, "WORKFLOW_START")
    await plugin.on_event(first)
    assert log_file.read_text() == expected_line(first)  # flushed before the handler returned
    await plugin.on_event(second)
    await plugin.close()
    assert log_file.read_text() == expected_line(first) + expected_line(second)
    line = json.loads(log_file.read_text().splitlines()[0])
    assert line["type"] == "TASK_FAIL" and line["id"] == "ev-1"
    assert line["task_instance_id"] == 70001 and line["event_time"] == "2024-01-02T03:04:05.123Z"
    assert ": " not in log_file.read_text().splitlines()[0]  # compact separators


async def test_batches_are_one_write_in_order(tmp_path: Path, logger_module: ModuleType) -> None:
    log_file = tmp_path / "batch.jsonl"
    plugin = await opened(logger_module, {"logFile": log_file})
    writes: list[str] = []
    real_write = plugin._file.write

    def recording_write(text: str) -> int:
        writes.append(text)
        return int(real_write(text))

    plugin._file.write = recording_write
    batch = [make_event(n) for n in (5, 6, 7)]
    assert supports_batch(plugin)
    await deliver_batch(plugin, batch)
    await plugin.close()
    assert writes == ["".join(expected_line(e) for e in batch)]
    assert log_file.read_text() == writes[0]


async def test_appends_across_reopen(tmp_path: Path, logger_module: ModuleType) -> None:
    log_file = tmp_path / "append.jsonl"
    log_file.write_text("earlier\n")
    for n in (1, 2):
        plugin = await opened(logger_module, {"logFile": log_file})
        await plugin.on_event(make_event(n))
        await plugin.close()
    assert log_file.read_text() == "earlier\n" + expected_line(make_event(1)) + expected_line(
        make_event(2)
    )


@pytest.mark.parametrize("fsync", [True, False])
async def test_fsync_only_when_asked(
    tmp_path: Path, logger_module: ModuleType, monkeypatch: pytest.MonkeyPatch, fsync: bool
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    plugin = await opened(logger_module, {"logFile": tmp_path / "s.jsonl", "fsync": fsync})
    await plugin.on_event(make_event(1))
    await plugin.on_events([make_event(2), make_event(3)])
    fileno = plugin._file.fileno()
    await plugin.close()
    assert synced == ([fileno, fileno] if fsync else [])


async def test_closed_plugin_fails_events(tmp_path: Path, logger_module: ModuleType) -> None:
    plugin = await opened(logger_module, {"logFile": tmp_path / "c.jsonl"})
    await plugin.close()
    await plugin.close()  # idempotent
    with pytest.raises(RuntimeError, match="not open"):
        await plugin.on_event(make_event(1))


def test_package_builds_and_inspects(tmp_path: Path) -> None:
    built = build_package(PLUGIN_DIR, tmp_path)
    assert built.name == "logger-1.0.0.zip"
    info = inspect_package(built.read_bytes())
    assert info.manifest.entry == "logger_listener:LoggerListener"
    assert info.manifest.display_name == "Logger" and str(info.manifest.sdk) == "<2,>=1"
    assert info.top_level_names == frozenset({"logger_listener"})
