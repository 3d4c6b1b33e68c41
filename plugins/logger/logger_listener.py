"""The logger listener: appends each event as one JSON line to a file, rotating it by size.

The reference plugin, and the simplest audit trail: one line per delivered event, written and
flushed before the handler returns, so a line on disk means the event was delivered. With
``maxBytes`` set, the file is rotated like ``logging.handlers.RotatingFileHandler`` does
(``events.jsonl`` → ``events.jsonl.1`` → … → ``events.jsonl.<backupCount>``), always between
two lines, so every file holds whole JSON lines.
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


def _shift_backups(path: Path, backup_count: int) -> None:
    """``path.N-1`` → ``path.N`` … ``path`` → ``path.1``; the oldest backup is overwritten."""
    for n in range(backup_count - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    if path.exists():
        os.replace(path, path.with_name(f"{path.name}.1"))


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
            params.InputNumber(
                "maxBytes",
                title="Rotate at (bytes)",
                value=0,
                min=0,
                info="Start a new file before one would grow past this size; 0 never rotates.",
            ),
            params.InputNumber(
                "backupCount",
                title="Rotated files kept",
                value=5,
                min=1,
                max=1000,
                info="How many rotated files (logFile.1 … logFile.N) to keep; older ones go.",
            ),
        ]

    def __init__(self) -> None:
        self._file: TextIO | None = None
        self._path = Path()
        self._fsync = False
        self._max_bytes = 0
        self._backup_count = 5
        self._size = 0  # bytes in the current file, to decide rotation without a stat per write
        self._active = False  # between open and close; a failed rotation reopens on next write

    async def open(self, config: dict[str, Any]) -> None:
        self._path = Path(str(config["logFile"]))
        self._fsync = bool(config.get("fsync", False))
        self._max_bytes = int(config.get("maxBytes") or 0)
        self._backup_count = max(1, int(config.get("backupCount") or 5))
        # Opening may touch a slow or network disk: keep it off the event loop.
        await self._reopen()
        self._active = True

    async def close(self) -> None:
        self._active = False
        file, self._file = self._file, None
        if file is not None:
            await asyncio.to_thread(file.close)

    async def on_event(self, event: events.ListenerEvent) -> None:
        await self._write_lines([_line(event)])

    async def on_events(self, batch: Sequence[events.ListenerEvent]) -> None:
        """One write for the whole batch: far fewer syscalls (and syncs) under load."""
        await self._write_lines([_line(event) for event in batch])

    async def _write_lines(self, lines: list[str]) -> None:
        if not self._active:
            raise RuntimeError("the log file is not open")
        if self._file is None:  # a rotation failed half-way (disk full, permissions): retry it
            await self._reopen()
        if self._max_bytes <= 0:
            await self._write("".join(lines))
            return
        # Cut the batch where the file would outgrow maxBytes; a single line longer than
        # maxBytes still gets a file of its own rather than being split.
        chunk: list[str] = []
        chunk_bytes = 0
        for line in lines:
            size = len(line.encode("utf-8"))
            used = self._size + chunk_bytes
            if used and used + size > self._max_bytes:
                if chunk:
                    await self._write("".join(chunk))
                    chunk, chunk_bytes = [], 0
                await self._rotate()
            chunk.append(line)
            chunk_bytes += size
        if chunk:
            await self._write("".join(chunk))

    async def _write(self, text: str) -> None:
        if self._file is None:
            raise RuntimeError("the log file is not open")
        # Appending and flushing one short buffer is quick enough inline; a sync is not.
        self._file.write(text)
        self._file.flush()
        self._size += len(text.encode("utf-8"))
        if self._fsync:
            await asyncio.to_thread(os.fsync, self._file.fileno())

    async def _rotate(self) -> None:
        """Closes the full file, shifts the backups and starts an empty file."""
        file, self._file = self._file, None
        if file is not None:
            await asyncio.to_thread(file.close)
        await asyncio.to_thread(_shift_backups, self._path, self._backup_count)
        await self._reopen()

    async def _reopen(self) -> None:
        self._file = await asyncio.to_thread(_open_for_append, str(self._path))
        self._size = os.fstat(self._file.fileno()).st_size
