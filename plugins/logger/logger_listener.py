"""The logger listener: appends each event as one JSON line to a file.

The reference plugin, and the simplest audit trail: one line per delivered event, written and
flushed before the handler returns, so a line on disk means the event was delivered.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from listener_common import ListenerPlugin, events, params


def _line(event: events.ListenerEvent) -> str:
    return json.dumps(event.to_dict(), separators=(",", ":")) + "\n"


def _open_for_append(path: str) -> TextIO:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.open("a", encoding="utf-8")


class LoggerListener(ListenerPlugin):
    """Writes ``event.to_dict()`` as compact JSON, one line per event."""

    @classmethod
    def params(cls) -> list[params.PluginParam]:
        return [
            params.Input(
                "logFile",
                title="Log file",
                required=True,
                info="Path of the JSON-lines file; parent directories are created.",
            ),
            params.Switch(
                "fsync",
                title="fsync after each write",
                value=False,
                info="Survive a power loss at the cost of one disk sync per write.",
            ),
        ]

    def __init__(self) -> None:
        self._file: TextIO | None = None
        self._fsync = False

    async def open(self, config: dict[str, Any]) -> None:
        # Opening may touch a slow or network disk: keep it off the event loop.
        self._file = await asyncio.to_thread(_open_for_append, str(config["logFile"]))
        self._fsync = bool(config.get("fsync", False))

    async def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            await asyncio.to_thread(file.close)

    async def on_event(self, event: events.ListenerEvent) -> None:
        await self._write(_line(event))

    async def on_events(self, batch: Sequence[events.ListenerEvent]) -> None:
        """One write for the whole batch: far fewer syscalls (and syncs) under load."""
        await self._write("".join(_line(event) for event in batch))

    async def _write(self, text: str) -> None:
        if self._file is None:
            raise RuntimeError("the log file is not open")
        # Appending and flushing one short buffer is quick enough inline; a sync is not.
        self._file.write(text)
        self._file.flush()
        if self._fsync:
            await asyncio.to_thread(os.fsync, self._file.fileno())
