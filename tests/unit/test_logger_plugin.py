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
from listener_common.errors import ParamValidationError
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
        ("maxBytes", "input-number", False),
        ("backupCount", "input-number", False),
    ]
    assert params.typed_config(form, {"logFile": "/x"}) == {
        "logFile": "/x",
        "fsync": False,
        "maxBytes": 0,
        "backupCount": 5,
    }
    with pytest.raises(ParamValidationError) as err:
        params.validate_params(form, {"logFile": "/x", "maxBytes": "-1", "backupCount": "0"})
    assert [field for field, _ in err.value.violations] == ["maxBytes", "backupCount"]
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


def file_sizes(directory: Path) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in directory.iterdir()}


def rotated_lines(log_file: Path, backups: int) -> list[list[str]]:
    """Each file's lines, oldest file first: logFile.N … logFile.1, logFile."""
    files = [log_file.with_name(f"{log_file.name}.{n}") for n in range(backups, 0, -1)]
    files.append(log_file)
    return [f.read_text().splitlines(keepends=True) for f in files if f.exists()]


async def test_rotates_by_size_between_lines(tmp_path: Path, logger_module: ModuleType) -> None:
    log_file = tmp_path / "rot.jsonl"
    one = len(expected_line(make_event(1)))  # every line of these events has the same length
    plugin = await opened(
        logger_module, {"logFile": log_file, "maxBytes": 2 * one + 1, "backupCount": 3}
    )
    await plugin.on_event(make_event(1))
    await plugin.on_events([make_event(n) for n in (2, 3, 4, 5)])  # a batch is cut in files
    await plugin.on_event(make_event(6))
    await plugin.close()
    files = rotated_lines(log_file, 3)
    assert files == [
        [expected_line(make_event(n)) for n in (1, 2)],
        [expected_line(make_event(n)) for n in (3, 4)],
        [expected_line(make_event(n)) for n in (5, 6)],
    ]
    assert max(file_sizes(tmp_path).values()) <= 2 * one + 1


async def test_rotation_keeps_backup_count_and_order(
    tmp_path: Path, logger_module: ModuleType
) -> None:
    log_file = tmp_path / "keep.jsonl"
    one = len(expected_line(make_event(1)))
    plugin = await opened(logger_module, {"logFile": log_file, "maxBytes": one, "backupCount": 2})
    for n in range(1, 6):
        await plugin.on_event(make_event(n))
    await plugin.close()
    # One line per file; only the current file and two backups remain: events 3, 4, 5.
    assert sorted(file_sizes(tmp_path)) == [
        "keep.jsonl",
        "keep.jsonl.1",
        "keep.jsonl.2",
    ]
    assert rotated_lines(log_file, 2) == [[expected_line(make_event(n))] for n in (3, 4, 5)]


async def test_rotation_counts_an_existing_file(tmp_path: Path, logger_module: ModuleType) -> None:
    log_file = tmp_path / "old.jsonl"
    log_file.write_text("x" * 100 + "\n")
    plugin = await opened(logger_module, {"logFile": log_file, "maxBytes": 120})
    await plugin.on_event(make_event(1))  # 101 bytes on disk + a ~300-byte line: rotate first
    await plugin.close()
    assert log_file.with_name("old.jsonl.1").read_text() == "x" * 100 + "\n"
    assert log_file.read_text() == expected_line(make_event(1))  # a long line gets its own file


async def test_rotation_with_fsync_syncs_each_file(
    tmp_path: Path, logger_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    one = len(expected_line(make_event(1)))
    plugin = await opened(
        logger_module, {"logFile": tmp_path / "f.jsonl", "fsync": True, "maxBytes": one}
    )
    await plugin.on_events([make_event(1), make_event(2)])
    await plugin.close()
    assert len(synced) == 2  # the rotated file before it was renamed, then the new one


async def test_failed_rotation_is_retried(
    tmp_path: Path, logger_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_file = tmp_path / "retry.jsonl"
    one = len(expected_line(make_event(1)))
    plugin = await opened(logger_module, {"logFile": log_file, "maxBytes": one})
    await plugin.on_event(make_event(1))
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        raise PermissionError("read-only directory")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(PermissionError):
        await plugin.on_event(make_event(2))
    monkeypatch.setattr(os, "replace", real_replace)
    await plugin.on_event(make_event(2))  # the redelivery rotates and writes
    await plugin.close()
    assert rotated_lines(log_file, 5) == [
        [expected_line(make_event(1))],
        [expected_line(make_event(2))],
    ]
