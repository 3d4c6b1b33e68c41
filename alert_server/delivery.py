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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from alert_server.convert import to_sdk_event
from alert_server.errors import LeaseExpired, PluginCallError, Stopped
from alert_server.filtering import choose, handled_before
from alert_server.loader import LoadedPackage
from alert_server.progress import ProgressWriter
from alert_server.reads import SharedReads
from alert_server.wakeup import SequenceSignal
from event_store import deliveries, events
from event_store.deliveries import Attempt, LeaseLost
from event_store.models import Delivery, ListenerInstance, utcnow
from event_store.retry import in_transaction
from event_store.store import Store
from listener import event_types
from listener_common import ListenerPlugin, _dispatch
from listener_common._dispatch import FailurePolicy as FailurePolicy  # host.py imports it here
from listener_common._dispatch import failure_text
from listener_core.event_filter import EventFilter
from listener_core.metrics import NO_METRICS, AlertMetrics, NullMetrics
from listener_core.settings import DeliverySettings
from listener_core.tracing import Tracing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerDeps:
    """What every runner of one alert server shares: built by the host for each runner."""

    store: Store
    signal: SequenceSignal
    settings: DeliverySettings
    owner: str  # this server's id, written with every fenced write
    progress: ProgressWriter
    reads: SharedReads
    # Delivered/failed/parked counts and latency (listener_core.metrics), per batch.
    metrics: AlertMetrics | NullMetrics = NO_METRICS
    # A delivery span per batch (listener_core.tracing); None: traces are off.
    tracing: Tracing | None = None


@dataclass(frozen=True)
class InstanceSpec:
    """What one listener instance asks of its runner, from its row and its plugin's form:
    built by ``alert_server.runner_factory``; an update builds a new one (a new runner)."""

    instance_id: str
    config: dict[str, Any]  # typed params, secrets opened
    types: Sequence[int]
    policy: FailurePolicy
    # Compiled once, when the runner starts: an update restarts the runner, so a changed
    # filter applies from the next event read.
    content_filter: EventFilter | None = None


def _count_through(batch: Sequence[events.StoredEvent], sequence: int) -> int:
    """How many events of the batch (ordered by sequence) go up to ``sequence``: usually
    all of them. By sequence, not ``batch.index(event)``, which compares whole events."""
    if batch[-1].sequence == sequence:
        return len(batch)
    return next(i for i, e in enumerate(batch) if e.sequence == sequence) + 1


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class InstanceRunner:
    def __init__(
        self, spec: InstanceSpec, package: LoadedPackage, fence: int, deps: RunnerDeps
    ) -> None:
        """Delivers ``spec``'s instance with ``package`` from the state in the store, its
        writes fenced by ``fence`` until it reads a newer one."""
        self.instance_id = spec.instance_id
        self.package = package
        self.config = spec.config
        # None reads every type: no "type IN (all thirteen)" filter for the common case.
        types = spec.types
        self.types: list[int] | None = None if set(types) >= event_types.ALL else list(types)
        self.policy = spec.policy
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
        self._plugin: ListenerPlugin | None = None
        self._lock = asyncio.Lock()  # held while a batch is in a plugin's hands
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._reload = True
        # The newest sequence known at the last read that found nothing: no new read until
        # a wake-up brings a newer one, so idle instances cost no queries.
        self._idle_at = -1
        self.progress = deps.progress
        self.reads = deps.reads
        self._progress: asyncio.Future[None] | None = None
        # Until when (event loop's monotonic time) the lease may be acted on; the host
        # extends it after each successful renewal. Plugin calls in flight, each with its
        # own handler deadline, are cut off when it runs out.
        self.lease_deadline = 0.0
        self._lease_renewed = asyncio.Event()
        self._calls: dict[asyncio.Timeout, float] = {}

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
        with contextlib.suppress(Exception):
            await self._flush_progress()
        await self._close_plugin()

    @property
    def plugin_open(self) -> bool:
        """Whether a plugin object is open (a hot swap opens its successor beforehand)."""
        return self._plugin is not None

    async def open_plugin(self, package: LoadedPackage) -> ListenerPlugin:
        """An opened object of ``package`` with this instance's params, not yet in use: the
        first half of a hot swap, run while the current object keeps delivering."""
        return await self._open(package)

    async def swap(self, package: LoadedPackage, plugin: ListenerPlugin | None = None) -> None:
        """Switches to ``package`` between two batches (waits for the one in flight), to
        ``plugin`` from ``open_plugin`` or, without one, to an object the next batch opens;
        then closes the old object. The switch itself cannot fail, so it needs no rollback."""
        async with self._lock:
            old, self._plugin, self.package = self._plugin, plugin, package
        if old is not None:
            await self._close(old)

    def extend_lease(self, deadline: float) -> None:
        """A renewal succeeded: events may be handed over until ``deadline``."""
        if deadline <= self.lease_deadline:
            return
        self.lease_deadline = deadline
        self._lease_renewed.set()
        for call, handler_deadline in self._calls.items():
            call.reschedule(min(handler_deadline, deadline))

    def _lease_valid(self) -> bool:
        return asyncio.get_running_loop().time() < self.lease_deadline

    async def _await_lease(self) -> None:
        """Waits (not holding the runner's lock, so ``stop`` is not held up) until the
        lease may be acted on."""
        while not self._lease_valid():
            self._lease_renewed.clear()
            await self._lease_renewed.wait()

    @contextlib.asynccontextmanager
    async def _call(self, timeout: float) -> AsyncIterator[None]:
        """One plugin call: cut off at its handler timeout or when the lease runs out,
        whichever comes first (a renewal meanwhile moves the second). A cut because of the
        lease raises ``LeaseExpired``, which is no failure of the plugin."""
        handler_deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(min(handler_deadline, self.lease_deadline)) as call:
                self._calls[call] = handler_deadline
                try:
                    yield
                finally:
                    del self._calls[call]
        except TimeoutError:
            if asyncio.get_running_loop().time() < handler_deadline:
                raise LeaseExpired() from None
            raise

    def kick(self, reload: bool = True) -> None:
        """Wakes the loop now (an operator's retry), re-reading the state first if asked."""
        self._reload = self._reload or reload
        self._wake.set()

    async def deliver_test(self, event: events.StoredEvent) -> str:
        """Hands an out-of-band test event to the plugin; returns the error, or ''."""
        async with self._lock:
            try:
                plugin = await self._opened()
                async with asyncio.timeout(self.settings.handler_timeout):
                    await plugin.on_event(to_sdk_event(event))
            except Exception as exc:
                return str(exc) if isinstance(exc, PluginCallError) else failure_text(exc)
        return ""

    # -- plugin calls ---------------------------------------------------------------------

    async def _opened(self) -> ListenerPlugin:
        """The plugin object, opened first if it is not yet (callers hold ``self._lock``)."""
        if self._plugin is None:
            self._plugin = await self._open(self.package)
        return self._plugin

    async def _open(self, package: LoadedPackage) -> ListenerPlugin:
        timeout = self.settings.handler_timeout
        try:
            return await _dispatch.open_plugin(package.plugin_class, self.config, timeout)
        except _dispatch.OpenFailed as exc:
            raise PluginCallError(str(exc)) from exc.__cause__

    async def _close(self, plugin: ListenerPlugin) -> None:
        error = await _dispatch.close_plugin(plugin, self.settings.handler_timeout)
        if error:
            log.warning("instance %s: close failed: %s", self.instance_id, error)

    async def _close_plugin(self) -> None:
        plugin, self._plugin = self._plugin, None
        if plugin is not None:
            await self._close(plugin)

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
            await self._close_plugin()

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
            # No timeout needed to find new events: the counter poll (wakeup.poll_forever)
            # bumps the signal when a wake-up was lost. A long one keeps idle runners idle.
            waiter = asyncio.create_task(
                self.signal.wait_above(high, self.settings.poll_interval * 30)
            )
            kicked = asyncio.create_task(self._wake.wait())
            try:
                await asyncio.wait({waiter, kicked}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                kicked.cancel()
            self._wake.clear()
            return
        self._idle_at = -1
        if self.filter is not None:
            await self._step_filtered(self.filter, batch)
            return
        started = time.monotonic()
        delivered, failure = await self._deliver(batch)
        if delivered > self.cursor:
            self.cursor = delivered
            self.attempts, self.last_error, self.next_attempt = 0, "", None
            count = _count_through(batch, delivered)
            last = batch[count - 1]
            history = deliveries.push_attempt(
                self._history, Attempt(_now_iso(), _ms(started), delivered, last.id, count)
            )
            self._progress = self.progress.submit(
                self.instance_id,
                self.owner,
                self.fence,
                delivered,
                history,
                self._lost,
                self.filtered,
            )
            self.metrics.delivered(self.instance_id, (e.publish_time for e in batch[:count]))
        if failure is not None:
            raise failure

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
            sent = [e for e in choice.chosen if e.sequence <= delivered]
            skipped = sum(1 for e in batch if e.sequence <= handled) - len(sent)
            self.cursor = handled
            self.attempts, self.last_error, self.next_attempt = 0, "", None
            self.filtered += skipped
            history = list(self._history)
            if sent:
                history = deliveries.push_attempt(
                    self._history,
                    Attempt(_now_iso(), _ms(started), delivered, sent[-1].id, len(sent)),
                )
                self.metrics.delivered(self.instance_id, (e.publish_time for e in sent))
            self._progress = self.progress.submit(
                self.instance_id,
                self.owner,
                self.fence,
                handled,
                history,
                self._lost,
                self.filtered,
            )
            if skipped:
                self.metrics.filtered(self.instance_id, skipped)
        if failure is not None:
            raise failure

    async def _deliver(
        self, batch: Sequence[events.StoredEvent]
    ) -> tuple[int, PluginCallError | None]:
        """Hands a batch over while the lease is valid; returns the last delivered sequence
        and the failure, if any. Stops early, without a failure, when the lease runs out."""
        await self._await_lease()
        async with self._lock:
            plugin = await self._opened()
            if self.tracing is None:
                count, failure = await self._hand_over(plugin, batch)
            else:
                traceparents = (e.traceparent for e in batch)
                with self.tracing.delivery(
                    self.instance_id, self.package.plugin_id, traceparents
                ) as span:
                    count, failure = await self._hand_over(plugin, batch)
                    error = failure.message if failure is not None else None
                    self.tracing.outcome(span, len(batch), count, error)
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
        return await _dispatch.deliver(
            plugin,
            batch,
            self.settings.handler_timeout,
            to_sdk_event,
            call=self._call,
            proceed=self._lease_valid,
            stop=(LeaseExpired,),
        )

    async def _redeliver_parked(self) -> None:
        """Delivers the events an operator asked to redeliver from the dead-letter list."""
        async with self.store.reader() as session:
            found = {
                e.sequence: e
                for e in await events.events_between(
                    session, self._redeliver[0], self._redeliver[-1]
                )
            }
        for sequence in list(self._redeliver):
            stored = found.get(sequence)
            error = "the event was purged" if stored is None else ""
            if stored is not None and self.filter is not None:
                choice = choose(self.filter, [stored], stored.sequence - 1)
                error = choice.error
                if not choice.chosen:
                    stored = None  # filtered out now (or failed: error says why)
            if stored is not None:
                await self._await_lease()
                async with self._lock:
                    try:
                        plugin = await self._opened()
                        async with asyncio.timeout(self.settings.handler_timeout):
                            await plugin.on_event(to_sdk_event(stored))
                    except Exception as exc:
                        error = failure_text(exc)
            if error:  # it stays parked, and the operator who asked should hear why
                log.warning(
                    "instance %s: redelivery of parked event %s (sequence %d) failed; it stays "
                    "parked: %s",
                    self.instance_id,
                    stored.id if stored is not None else "",
                    sequence,
                    error,
                    extra={
                        "instance": self.instance_id,
                        "event_id": stored.id if stored is not None else "",
                        "action": "redeliver",
                    },
                )
            await in_transaction(
                self.store,
                partial(
                    deliveries.finish_redelivery,
                    instance_id=self.instance_id,
                    sequence=sequence,
                    error=error,
                ),
            )
            self._redeliver.remove(sequence)

    def _lost(self) -> None:
        """The progress writer's write was refused: re-read the state (or stop)."""
        self._reload = True
        self._wake.set()

    async def _flush_progress(self) -> None:
        """Waits for this runner's pending cursor write, before a write of its own."""
        if self._progress is not None and not self._progress.done():
            await asyncio.shield(self._progress)

    async def _failed(self, exc: PluginCallError) -> None:
        await self._flush_progress()
        self.attempts += 1
        self.last_error = str(exc)
        event = exc.event
        attempt = Attempt(
            _now_iso(),
            0.0,
            event.sequence if event else 0,
            event.id if event else "",
            self.attempts,
            self.last_error,
        )
        history = deliveries.history_json(deliveries.push_attempt(self._history, attempt))
        self.metrics.failed(self.instance_id)
        ids = {"instance": self.instance_id, "event_id": attempt.event_id, "attempt": self.attempts}
        if event is not None and self.policy.parks(self.attempts, exc.permanent):
            log.warning(
                "instance %s: parking event %s after %d attempt(s): %s",
                self.instance_id,
                event.id,
                self.attempts,
                self.last_error,
                extra=ids,
            )
            await in_transaction(
                self.store,
                partial(
                    deliveries.park,
                    instance_id=self.instance_id,
                    owner=self.owner,
                    fence=self.fence,
                    sequence=event.sequence,
                    event_id=event.id,
                    attempts=self.attempts,
                    error=self.last_error,
                    attempts_json=history,
                ),
            )
            self.metrics.parked(self.instance_id)
            self.cursor = event.sequence
            self.attempts, self.last_error, self.next_attempt = 0, "", None
            return
        delay = _dispatch.next_delay(
            self.attempts, self.settings.retry_base, self.settings.retry_max, exc.retry_after
        )
        self.next_attempt = utcnow() + timedelta(seconds=delay)
        log.warning(
            "instance %s: attempt %d failed: %s; next attempt in %.1fs",
            self.instance_id,
            self.attempts,
            self.last_error,
            delay,
            extra=ids,
        )
        await in_transaction(
            self.store,
            partial(
                deliveries.record_failure,
                instance_id=self.instance_id,
                owner=self.owner,
                fence=self.fence,
                delivered_seq=self.cursor,
                attempts=self.attempts,
                error=self.last_error,
                next_attempt=self.next_attempt,
                attempts_json=history,
            ),
        )


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
