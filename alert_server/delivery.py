"""One delivery loop per listener instance: read its events in order, hand them over, record.

At least once: the cursor moves only after the plugin returned, so a crash in between
redelivers the same events with the same ids. A failure blocks the instance on its head
event and retries it with backoff (``listener_common._dispatch``), or, under the ``park`` policy,
moves it to the dead-letter list after N attempts; other instances never wait.

Every write is fenced (``event_store.deliveries``): when an operator moved the cursor or
another alert server took the instance over, the write is refused, and the runner re-reads
its state or, if it no longer owns the instance, stops.

Before that, the lease discipline (``alert_server.lease_clock``): a runner hands events to
its plugin only while this server's lease on the instance is known to be valid. When the
validity runs out without a renewal, no new event or batch starts, a plugin call in flight
is cut off at that moment (what was delivered before is kept), and the runner waits for the
next successful renewal; if another server took the instance meanwhile, the host stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

from alert_server.convert import to_sdk_event
from alert_server.errors import LeaseExpired, PluginCallError, Stopped
from alert_server.failures import Failures, Where, now_iso, redeliver_parked
from alert_server.filtering import choose, handled_before
from alert_server.lease_gate import LeaseGate
from alert_server.loader import LoadedPackage
from alert_server.plugin_slot import PluginSlot
from alert_server.runner_spec import InstanceSpec, RunnerDeps
from event_store import deliveries, events
from event_store.deliveries import Attempt, LeaseLost
from event_store.models import Delivery, ListenerInstance, utcnow
from listener import event_types
from listener_common import ListenerPlugin, _dispatch
from listener_common._dispatch import failure_text
from listener_core.event_filter import EventFilter

log = logging.getLogger(__name__)


def _count_through(batch: Sequence[events.StoredEvent], sequence: int) -> int:
    """How many events of the batch (ordered by sequence) go up to ``sequence``: usually
    all of them. By sequence, not ``batch.index(event)``, which compares whole events."""
    if batch[-1].sequence == sequence:
        return len(batch)
    return next(i for i, e in enumerate(batch) if e.sequence == sequence) + 1


class InstanceRunner:
    def __init__(
        self, spec: InstanceSpec, package: LoadedPackage, fence: int, deps: RunnerDeps
    ) -> None:
        """Delivers ``spec``'s instance with ``package`` from the state in the store, its
        writes fenced by ``fence`` until it reads a newer one."""
        self.instance_id = spec.instance_id
        self.config = spec.config
        # None reads every type: no "type IN (all thirteen)" filter for the common case.
        types = spec.types
        self.types: list[int] | None = None if set(types) >= event_types.ALL else list(types)
        self.policy = spec.policy
        self.failures = Failures(deps.store, spec.policy, deps.settings, deps.metrics)
        self.filter = spec.content_filter
        self.filtered = 0  # the instance's total, written with the cursor
        self.store = deps.store
        self.signal = deps.signal
        self.settings = deps.settings
        self.owner = deps.owner
        self.metrics = deps.metrics
        self.tracing = deps.tracing
        self.fence = fence
        self.paused = False
        self.cursor = 0
        self.attempts = 0
        self.last_error = ""
        self.next_attempt: datetime | None = None
        self.stopped = False
        self._history: list[dict[str, Any]] = []
        self._redeliver: list[int] = []
        # The plugin object; its lock is held while a batch is in the plugin's hands. A hot
        # swap (alert_server.packages) opens the successor and switches through it.
        self.slot = PluginSlot(
            spec.instance_id, package, spec.config, deps.settings.handler_timeout
        )
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._idle_waiter: asyncio.Future[None] | None = None  # set while idle, for kick
        self._reload = True
        # The newest sequence known at the last read that found nothing: no new read until
        # a wake-up brings a newer one, so idle instances cost no queries.
        self._idle_at = -1
        self.progress = deps.progress
        self.reads = deps.reads
        self._progress: asyncio.Future[None] | None = None
        # Until when the lease may be acted on; the host extends it after each renewal.
        self.lease = LeaseGate()

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
            async with self.slot.lock:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self._flush_progress()
        await self.slot.close()

    @property
    def package(self) -> LoadedPackage:
        return self.slot.package

    def extend_lease(self, deadline: float) -> None:
        """A renewal succeeded: events may be handed over until ``deadline``."""
        self.lease.extend(deadline)

    def kick(self, reload: bool = True) -> None:
        """Wakes the loop now (an operator's retry), re-reading the state first if asked."""
        self._reload = self._reload or reload
        self._wake.set()
        waiter = self._idle_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def deliver_test(self, event: events.StoredEvent) -> str:
        """Hands an out-of-band test event to the plugin; returns the error, or ''."""
        try:
            await self.slot.call(event)
        except Exception as exc:
            return str(exc) if isinstance(exc, PluginCallError) else failure_text(exc)
        return ""

    # -- state ----------------------------------------------------------------------------

    def preload(self, row: Delivery, inst: ListenerInstance, redeliver: list[int]) -> None:
        """Starts from state the host read for many instances at once (at start, 1,000
        instances cost four queries instead of about five each); an owner that is not this
        server leaves the state unloaded, so the first step's _load_state stops the runner."""
        if row.owner == self.owner:
            self._apply_state(row, inst, redeliver)

    async def _load_state(self) -> None:
        await self._flush_progress()
        async with self.store.reader() as session:
            row = await session.get(Delivery, self.instance_id)
            inst = await session.get(ListenerInstance, self.instance_id)
            if row is None or inst is None or row.owner != self.owner:
                raise Stopped()
            redeliver = await deliveries.redeliveries(session, self.instance_id)
        self._apply_state(row, inst, redeliver)

    def _apply_state(self, row: Delivery, inst: ListenerInstance, redeliver: list[int]) -> None:
        self._redeliver = redeliver
        self.fence = row.fence
        self.cursor = row.delivered_seq
        self.attempts = row.attempts
        self.last_error = row.last_error
        self.next_attempt = row.next_attempt_time
        self.paused = inst.desired_state == "PAUSED"
        self._history = json.loads(row.recent_attempts or "[]")
        self.filtered = row.filtered_count or 0
        self._idle_at = -1
        self._reload = False

    async def _run(self) -> None:
        try:
            while True:
                failure: PluginCallError | None = None
                try:
                    if self._reload:
                        await self._load_state()
                    await self._step()
                except PluginCallError as exc:
                    failure = exc
                except (asyncio.CancelledError, Stopped):
                    raise
                except Exception as exc:
                    await self._trouble(exc)
                if failure is not None:
                    try:
                        await self._failed(failure)
                    except (asyncio.CancelledError, Stopped):
                        raise
                    except Exception as exc:
                        await self._trouble(exc)
        except Stopped:
            log.info("instance %s: no longer owned here; stopping", self.instance_id)
            self.stopped = True
            await self.slot.close()

    async def _trouble(self, exc: Exception) -> None:
        """A refused write (re-read the state) or a store outage (wait, re-read, retry)."""
        self._reload = True
        if not isinstance(exc, LeaseLost):
            log.warning("instance %s: delivery step failed: %s", self.instance_id, exc)
            await self._sleep(self.settings.poll_interval)

    async def _sleep(self, seconds: float) -> None:
        """Sleeps, cut short by ``kick`` (also one that came just before)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._wake.wait()
        self._wake.clear()

    async def _step(self) -> None:
        if self.paused:
            await self._sleep(self.settings.poll_interval * 5)
            return
        if self.attempts and self.next_attempt is not None:
            wait = (self.next_attempt - utcnow()).total_seconds()
            if wait > 0:
                await self._sleep(wait)
                return
        if self._redeliver:
            await self._redeliver_parked()
            return
        high = self.signal.latest
        if high > self._idle_at:
            batch = await self.reads.read_after(self.cursor, self.types, self.settings.batch_size)
        else:
            batch = []  # nothing committed since the last empty read: no query
        if not batch:
            self._idle_at = high
            await self._idle(high)
            return
        self._idle_at = -1
        if self.filter is not None:
            await self._step_filtered(self.filter, batch)
            return
        started = time.monotonic()
        delivered, failure = await self._deliver(batch)
        if delivered > self.cursor:
            self._advance(delivered, batch[: _count_through(batch, delivered)], started)
        if failure is not None:
            raise failure

    def _advance(self, handled: int, sent: Sequence[events.StoredEvent], started: float) -> None:
        """The cursor moves to ``handled``, ``sent`` having reached the plugin (the others
        up to it were filtered out): the progress writer writes it, batched and fenced."""
        self.cursor = handled
        self.attempts, self.last_error, self.next_attempt = 0, "", None
        history = list(self._history)
        if sent:
            last = sent[-1]
            history = deliveries.push_attempt(
                self._history, Attempt(now_iso(), _ms(started), last.sequence, last.id, len(sent))
            )
            self.metrics.delivered(self.instance_id, (e.publish_time for e in sent))
        self._progress = self.progress.submit(
            self.instance_id, self.owner, self.fence, handled, history, self._lost, self.filtered
        )

    async def _idle(self, high: int) -> None:
        """Waits for an event above ``high`` or a kick. No timeout is needed to find new
        events: the counter poll (wakeup.poll_forever) bumps the signal when a wake-up was
        lost. A long one keeps idle runners idle."""
        if self.signal.latest > high or self._wake.is_set():
            self._wake.clear()
            return
        # One future the signal or a kick sets: woken in the turn after a Notify, no tasks.
        waiter = self._idle_waiter = self.signal.waiter()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval * 30):
                    await waiter
        finally:
            self._idle_waiter = None
            self.signal.discard(waiter)
        self._wake.clear()

    async def _step_filtered(
        self, content_filter: EventFilter, batch: Sequence[events.StoredEvent]
    ) -> None:
        """A batch through the instance's filter: the selected events go to the plugin, the
        others only move the cursor (counted as filtered). An event the expression fails on
        is a failure like a plugin's, under the failure policy, with the expression's error."""
        choice = choose(content_filter, batch, self.cursor)
        started = time.monotonic()
        delivered, failure = self.cursor, None
        if choice.chosen:
            delivered, failure = await self._deliver(choice.chosen)
        if failure is not None:
            head = failure.event.sequence if failure.event else delivered + 1
            handled = max(delivered, handled_before(batch, head, self.cursor))
        else:
            handled = choice.through
            if choice.failed is not None:
                stored = choice.failed
                failure = PluginCallError(
                    f"event {stored.id} (sequence {stored.sequence}): {choice.error}",
                    event=stored,
                )
        if handled > self.cursor:
            sent = choice.chosen  # usually all of them, and every event up to the last
            if sent and sent[-1].sequence > delivered:
                sent = [e for e in sent if e.sequence <= delivered]
            skipped = _count_through(batch, handled) - len(sent)
            self.filtered += skipped
            self._advance(handled, sent, started)
            if skipped:
                self.metrics.filtered(self.instance_id, skipped)
        if failure is not None:
            raise failure

    async def _deliver(
        self, batch: Sequence[events.StoredEvent]
    ) -> tuple[int, PluginCallError | None]:
        """Hands a batch over while the lease is valid; returns the last delivered sequence
        and the failure, if any. Stops early, without a failure, when the lease runs out."""
        await self.lease.wait()
        async with self.slot.in_use() as plugin:
            count, failure = await self._hand_over(plugin, batch)
        delivered = batch[count - 1].sequence if count else self.cursor
        if failure is None:
            return delivered, None
        return delivered, PluginCallError(
            failure.message,
            event=batch[failure.index],
            retry_after=failure.retry_after,
            permanent=failure.permanent,
        )

    async def _hand_over(
        self, plugin: ListenerPlugin, batch: Sequence[events.StoredEvent]
    ) -> tuple[int, _dispatch.Failure | None]:
        """The batch through ``_dispatch.deliver`` under the lease, in a delivery span when
        traces are on."""
        deliver = partial(
            _dispatch.deliver,
            plugin,
            batch,
            self.settings.handler_timeout,
            to_sdk_event,
            call=self.lease.call,
            proceed=self.lease.valid,
            stop=(LeaseExpired,),
        )
        if self.tracing is None:
            return await deliver()
        traceparents = (e.traceparent for e in batch)
        with self.tracing.delivery(self.instance_id, self.package.plugin_id, traceparents) as span:
            count, failure = await deliver()
            self.tracing.outcome(span, len(batch), count, failure.message if failure else None)
        return count, failure

    async def _redeliver_parked(self) -> None:
        """Delivers the events an operator asked to redeliver from the dead-letter list."""

        async def hand_over(event: events.StoredEvent) -> None:
            await self.lease.wait()
            await self.slot.call(event)

        await redeliver_parked(
            self.store, self.instance_id, self._redeliver, self.filter, hand_over
        )

    def _lost(self) -> None:
        """The progress writer's write was refused: re-read the state (or stop)."""
        self._reload = True
        self._wake.set()

    async def _flush_progress(self) -> None:
        """Waits for this runner's pending cursor write, before a write of its own."""
        if self._progress is not None and not self._progress.done():
            await asyncio.shield(self._progress)

    async def _failed(self, exc: PluginCallError) -> None:
        """Records a failed attempt; a parked event moves the cursor past it."""
        await self._flush_progress()
        self.attempts += 1
        self.last_error = str(exc)
        where = Where(self.instance_id, self.owner, self.fence)
        verdict = await self.failures.record(where, exc, self.attempts, self.cursor, self._history)
        self.next_attempt = verdict.next_attempt
        if verdict.parked and exc.event is not None:
            self.cursor = exc.event.sequence
            self.attempts, self.last_error = 0, ""


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
