"""The logger plugin installed through the API writes every event, in order, across rotated
files, and a hot swap to a new version goes on appending to the same file."""

from __future__ import annotations

import json
from pathlib import Path

from listener.v1 import plugin_pb2
from tests.plugins.support import (
    FAST_RETRY,
    create_instance,
    install,
    package,
    publish,
    run_events,
    wait_caught_up,
)
from tests.support.databases import sqlite_url
from tests.support.servers import running_pair


def read_in_order(log_file: Path, backups: int) -> list[list[dict[str, object]]]:
    """Each file's events, oldest file first."""
    files = [log_file.with_name(f"{log_file.name}.{n}") for n in range(backups, 0, -1)]
    return [
        [json.loads(line) for line in f.read_text().splitlines()]
        for f in [*files, log_file]
        if f.exists()
    ]


async def test_rotated_files_hold_every_event_in_order(tmp_path: Path) -> None:
    log_file = tmp_path / "out" / "events.jsonl"
    async with running_pair(sqlite_url(tmp_path), tmp_path, **FAST_RETRY) as pair:
        c = pair.clients
        await install(c, "logger", tmp_path)
        values = {"logFile": str(log_file), "maxBytes": "4000", "backupCount": "50"}
        await create_instance(c, "audit", "logger", values)
        ids = await publish(c, run_events(1, 20))
        await wait_caught_up(c, "audit")

        await c.plugins.UpdatePlugin(
            plugin_pb2.UpdatePluginRequest(
                plugin=plugin_pb2.Plugin(name="plugins/logger"),
                package=package("logger", tmp_path, version="1.0.1"),
            )
        )
        ids += await publish(c, run_events(21, 10))
        await wait_caught_up(c, "audit")

    files = read_in_order(log_file, 50)
    assert len(files) > 3  # rotated several times
    assert [e["id"] for f in files for e in f] == ids
    sizes = [f.stat().st_size for f in log_file.parent.iterdir()]
    big = max(len(json.dumps(e, separators=(",", ":"))) + 1 for f in files for e in f)
    # Rotation cuts between lines: a file is over maxBytes only when one line alone is.
    assert max(sizes) <= max(4000, big)
