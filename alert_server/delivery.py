"""One delivery loop per listener instance: read its events in order, hand them over, record.

At least once: the cursor moves only after the plugin returned, so a crash in between
redelivers the same events with the same ids. A failure blocks the instance on its head
event and retries it with backoff (``alert_server.backoff``); other instances never wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from alert_server.backoff import retry_delay
from alert_server.convert import to_sdk_event
from alert_server.loader import LoadedPackage
from alert_server.wakeup import SequenceSignal
from event_store import deliveries, events
from event_store.models import Delivery, utcnow
from event_store.store import Store
from listener_common import ListenerPlugin
from listener_common.plugin import deliver_batch, supports_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliverySettings:
    handler_timeout: float = 30.0
    batch_size: int = 500
    poll_interval: float = 2.0
    retry_base: float = 1.0
    retry_max: float = 300.0


class PluginCallError(Exception):
    """A plugin's open or handler raised or timed out; the message is what operators see."""


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "handler timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class InstanceRunner:
    def __init__(
        self,
        instance_id: str,
        package: LoadedPackage,
        config: dict[str, Any],
        types: Sequence[int],
        paused: bool,
        store: Store,
        signal: SequenceSignal,
        settings: DeliverySettings,
    ) -> None:
        self.instance_id = instance_id
        self.package = package
        self.config = config
        self.types = list(types)
        self.paused = paused
        self.store = store
        self.signal = signal
        self.settings = settings
        self.cursor = 0
        self.attempts = 0
        self.last_error = ""
        self._plugin: ListenerPlugin | None = None
        self._lock = asyncio.Lock()  # held while a batch is in a plugin's hands
        self._task: asyncio.Task[None] | None = None
        self._retry_now = asyncio.Event()

    @property
    def state(self) -> str:
        if self.paused:
            return "PAUSED"
        return "BLOCKED" if self.attempts else "ACTIVE"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"delivery:{self.instance_id}")

    async def stop(self) -> None:
        """Stops after the batch in flight, then closes the plugin object."""
        if self._task is not None:
            async with self._lock:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_plugin()

    async def swap(self, package: LoadedPackage) -> None:
        """Switches to another package between two batches; on failure the old one stays."""
        async with self._lock:
            fresh = await self._open(package)
            old, self._plugin, self.package = self._plugin, fresh, package
            if old is not None:
                await self._close(old)

    def retry_now(self) -> None:
        self._retry_now.set()

    async def _open(self, package: LoadedPackage) -> ListenerPlugin:
        plugin = package.plugin_class()
        try:
            await asyncio.wait_for(plugin.open(dict(self.config)), self.settings.handler_timeout)
        except Exception as exc:
            raise PluginCallError(f"open failed: {describe(exc)}") from exc
        return plugin

    async def _close(self, plugin: ListenerPlugin) -> None:
        try:
            await asyncio.wait_for(plugin.close(), self.settings.handler_timeout)
        except Exception as exc:
            log.warning("instance %s: close failed: %s", self.instance_id, describe(exc))

    async def _close_plugin(self) -> None:
        plugin, self._plugin = self._plugin, None
        if plugin is not None:
            await self._close(plugin)

    async def _load_cursor(self) -> None:
        async with self.store.reader() as session:
            row = await session.get(Delivery, self.instance_id)
        if row is not None:
            self.cursor = row.delivered_seq
            self.attempts = row.attempts
            self.last_error = row.last_error

    async def _run(self) -> None:
        while True:
            try:
                await self._load_cursor()
                break
            except Exception as exc:
                log.warning("instance %s: cannot read its cursor: %s", self.instance_id, exc)
                await asyncio.sleep(self.settings.poll_interval)
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except PluginCallError as exc:
                await self._failed(str(exc))
            except Exception as exc:  # the store is down or broken: wait and try again
                log.warning("instance %s: delivery step failed: %s", self.instance_id, exc)
                await asyncio.sleep(self.settings.poll_interval)

    async def _step(self) -> None:
        if self.paused:
            await self.signal.wait_above(self.signal.latest, self.settings.poll_interval)
            return
        high = self.signal.latest
        async with self.store.reader() as session:
            batch = await events.read_after(
                session, self.cursor, self.types, self.settings.batch_size
            )
        if not batch:
            await self.signal.wait_above(max(high, self.cursor), self.settings.poll_interval)
            return
        delivered, failure = await self._deliver(batch)
        if delivered > self.cursor:
            self.cursor = delivered
            self.attempts, self.last_error = 0, ""
            async with self.store.transaction() as session:
                await deliveries.record_progress(session, self.instance_id, delivered)
        if failure:
            raise PluginCallError(failure)

    async def _deliver(self, batch: Sequence[events.StoredEvent]) -> tuple[int, str]:
        """Hands a batch over; returns the last delivered sequence and the failure, if any."""
        delivered = self.cursor
        timeout = self.settings.handler_timeout
        async with self._lock:
            if self._plugin is None:
                self._plugin = await self._open(self.package)
            plugin = self._plugin
            if supports_batch(plugin):
                try:
                    sdk_events = [to_sdk_event(e) for e in batch]
                    await asyncio.wait_for(deliver_batch(plugin, sdk_events), timeout)
                except Exception as exc:
                    return delivered, f"batch from sequence {batch[0].sequence}: {describe(exc)}"
                return batch[-1].sequence, ""
            for stored in batch:
                try:
                    await asyncio.wait_for(plugin.on_event(to_sdk_event(stored)), timeout)
                except Exception as exc:
                    return delivered, (
                        f"event {stored.id} (sequence {stored.sequence}): {describe(exc)}"
                    )
                delivered = stored.sequence
        return delivered, ""

    async def _failed(self, error: str) -> None:
        self.attempts += 1
        self.last_error = error
        delay = retry_delay(self.attempts, self.settings.retry_base, self.settings.retry_max)
        log.warning(
            "instance %s: attempt %d failed: %s; next attempt in %.1fs",
            self.instance_id,
            self.attempts,
            error,
            delay,
        )
        try:
            async with self.store.transaction() as session:
                await deliveries.record_failure(
                    session,
                    self.instance_id,
                    self.cursor,
                    self.attempts,
                    error,
                    utcnow() + timedelta(seconds=delay),
                )
        except Exception as exc:
            log.warning("instance %s: cannot record the failure: %s", self.instance_id, exc)
        self._retry_now.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._retry_now.wait(), delay)
