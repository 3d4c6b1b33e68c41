"""Reads what the bench plugin wrote: one line per batch it was handed.

The handler's timestamps are taken by the plugin itself, so the driver may read the files
late (it polls) without that delay entering any figure.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Batch:
    time: float
    version: str
    count: int
    first: int
    last: int
    sequences: tuple[int, ...] = ()


@dataclass
class Report:
    """One instance's report file, read incrementally."""

    path: Path
    batches: list[Batch] = field(default_factory=list)
    _offset: int = 0
    _rest: bytes = b""

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        self._offset += len(data)
        data = self._rest + data
        lines = data.split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            parts = line.decode().split(" ")
            seqs = tuple(int(s) for s in parts[5].split(",")) if len(parts) > 5 else ()
            self.batches.append(
                Batch(float(parts[0]), parts[1], int(parts[2]), int(parts[3]), int(parts[4]), seqs)
            )

    @property
    def last(self) -> int:
        return self.batches[-1].last if self.batches else 0

    def delivered_since(self, wall: float) -> int:
        return sum(b.count for b in self.batches if b.time >= wall)

    def time_reaching(self, sequence: int) -> float | None:
        """Handler time of the first batch that reached ``sequence``."""
        for b in self.batches:
            if b.last >= sequence:
                return b.time
        return None


async def wait_reaching(reports: list[Report], sequence: int, timeout: float) -> bool:
    """Polls the reports until each has delivered up to ``sequence``; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        for r in reports:
            r.poll()
        if all(r.last >= sequence for r in reports):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
