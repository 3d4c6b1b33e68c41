"""Finds the alert servers through the store, for an API server with no ``alert_targets``.

Every alert server writes its advertised address with each heartbeat (a third of
``lease_ttl``). An API server reads those rows as often and drives each server whose row is
new or whose heartbeat token changed within a lease term, judged on its own monotonic clock
as the alert servers judge each other (``alert_server.lease_clock``): no wall clocks are
compared. A clean shutdown deletes the row (gone at the next read); a killed server's row
stops changing and is dropped after a lease term. After a failed read of the store nothing
seen before counts, so an outage never empties the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from alert_server.lease_clock import Watch
from api_server.alert_fleet import AlertFleet
from event_store import alert_servers
from event_store.store import Store

log = logging.getLogger(__name__)


class Discovery:
    def __init__(self, store: Store, fleet: AlertFleet, lease_ttl: float) -> None:
        self.store = store
        self.fleet = fleet
        self.period = lease_ttl / 3
        self._seen = Watch(lease_ttl)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Reads the registry once and makes the fleet drive the live servers."""
        async with self._lock:
            try:
                async with self.store.reader() as session:
                    rows = await alert_servers.registered(session)
            except Exception as exc:
                self._seen.forget()
                log.warning("cannot read the alert servers from the store: %s", exc)
                return
            now = asyncio.get_running_loop().time()
            self._seen.observe({sid: row.heartbeat for sid, row in rows.items()}, now)
            live = sorted(
                {
                    row.address
                    for sid, row in rows.items()
                    if row.address and not self._seen.unchanged_for_a_term(sid, now)
                }
            )
            added, removed = await self.fleet.set_targets(live)
            for target in added:
                log.info("alert server %s joined (found in the store)", target)
            for target in removed:
                log.info("alert server %s left (no heartbeat for a lease term)", target)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            await self.refresh()

    async def start(self) -> None:
        """A first read before serving, then one every heartbeat period."""
        self.fleet.refresh = self.refresh
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="alert-discovery")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
