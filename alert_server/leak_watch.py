"""Watching unloaded plugin versions until nothing of them is alive.

A version the host unloaded (``PackageLoader.unload``) leaves a :class:`Residue`; the watch
checks it shortly after, then with a growing interval, and reports what still holds it
(``GetStatus`` shows the reports) until it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import dataclass, field

from alert_server.loader import Residue

log = logging.getLogger(__name__)

#: Seconds after an unload before the first leak check, and the longest interval between two.
LEAK_CHECK_DELAY = 0.25
LEAK_CHECK_MAX = 60.0


@dataclass(frozen=True)
class LeakReport:
    """An unloaded plugin version that is still alive, and why (``Residue.find_leaks``)."""

    plugin_id: str
    sha256: str
    version: str
    prefix: str
    leaks: list[str] = field(default_factory=list)


class LeakWatch:
    """Checks every residue it is given until it is gone; :meth:`reports` says what is not."""

    def __init__(self) -> None:
        self._residues: list[Residue] = []  # unloaded versions not yet seen to be gone
        self._reports: dict[str, LeakReport] = {}  # by module prefix
        self._added = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def watch(self, residue: Residue) -> None:
        """Starts watching an unloaded version (checked soon, then less and less often)."""
        self._residues.append(residue)
        self._added.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="leak-watch")

    @property
    def pending(self) -> bool:
        """Whether some unloaded version has not yet been seen to be gone."""
        return bool(self._residues)

    def reports(self) -> list[LeakReport]:
        """The unloaded versions still alive at the last check."""
        return list(self._reports.values())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        """Checks unloaded versions until nothing of them is alive; reports them until then.

        First shortly after an unload (its last calls have returned by then), then with a
        growing interval: a leak that resolves itself (a timed-out handler's thread that
        finally returns) disappears from the status; one that does not stays reported. All
        pending versions share one garbage collection per check, because a full collection
        stalls the whole process for a moment (tens of ms in a large one), and an update
        retires two (the probed copy and the replaced version).
        """
        delay = LEAK_CHECK_DELAY
        while self._residues:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._added.wait()
                delay = LEAK_CHECK_DELAY  # a new one: check it soon, then back off again
                await asyncio.sleep(delay)
            self._added.clear()
            gc.collect()
            for residue in list(self._residues):
                self._check(residue)
            delay = min(delay * 2, LEAK_CHECK_MAX)

    def _check(self, residue: Residue) -> None:
        leaks = residue.find_leaks(collect=False)
        if not leaks:
            self._residues.remove(residue)
            if self._reports.pop(residue.prefix, None) is not None:
                log.info("plugin %s %s: no longer leaking", residue.plugin_id, residue.version)
            return
        if residue.prefix not in self._reports:
            log.warning(
                "plugin %s %s was unloaded but is still alive: %s",
                residue.plugin_id,
                residue.version,
                "; ".join(leaks),
            )
        self._reports[residue.prefix] = LeakReport(
            residue.plugin_id, residue.sha256, residue.version, residue.prefix, leaks
        )
