"""What a failed delivery attempt does: a retry with backoff, or, under the instance's failure
policy, the event parked in the dead-letter list; and the redelivery of parked events an
operator asked for. Every write is fenced like the runner's own (``event_store.deliveries``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from alert_server.errors import PluginCallError
from alert_server.filtering import choose
from event_store import deliveries, events
from event_store.deliveries import Attempt
from event_store.models import utcnow
from event_store.retry import in_transaction
from event_store.store import Store
from listener_common import _dispatch
from listener_common._dispatch import FailurePolicy, failure_text
from listener_core.event_filter import EventFilter
from listener_core.metrics import AlertMetrics, NullMetrics
from listener_core.settings import DeliverySettings

# The delivery loop's logger, as operators filter it: the runner's lines, wherever written.
log = logging.getLogger("alert_server.delivery")


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Where:
    """The instance's delivery row as the runner last read it: the fenced writes name it."""

    instance_id: str
    owner: str
    fence: int


@dataclass(frozen=True)
class Verdict:
    """What became of a failed attempt: the event parked (the cursor moves past it), or a
    retry at ``next_attempt``."""

    parked: bool
    next_attempt: datetime | None = None


class Failures:
    """Records one instance's failed attempts; the runner keeps the counts."""

    def __init__(
        self,
        store: Store,
        policy: FailurePolicy,
        settings: DeliverySettings,
        metrics: AlertMetrics | NullMetrics,
    ) -> None:
        self.store = store
        self.policy = policy
        self.settings = settings
        self.metrics = metrics

    async def record(
        self,
        where: Where,
        exc: PluginCallError,
        attempts: int,
        cursor: int,
        history: list[dict[str, Any]],
    ) -> Verdict:
        """Writes the ``attempts``-th failure of the head event (after ``cursor``): parks it
        if the policy says so, else schedules the next attempt with backoff."""
        event, error = exc.event, str(exc)
        attempt = Attempt(
            now_iso(),
            0.0,
            event.sequence if event else 0,
            event.id if event else "",
            attempts,
            error,
        )
        history_json = deliveries.history_json(deliveries.push_attempt(history, attempt))
        self.metrics.failed(where.instance_id)
        ids = {"instance": where.instance_id, "event_id": attempt.event_id, "attempt": attempts}
        if event is not None and self.policy.parks(attempts, exc.permanent):
            log.warning(
                "instance %s: parking event %s after %d attempt(s): %s",
                where.instance_id,
                event.id,
                attempts,
                error,
                extra=ids,
            )
            park = partial(
                deliveries.park, sequence=event.sequence, event_id=event.id, attempts=attempts
            )
            await self._write(park, where, error, history_json)
            self.metrics.parked(where.instance_id)
            return Verdict(parked=True)
        delay = _dispatch.next_delay(
            attempts, self.settings.retry_base, self.settings.retry_max, exc.retry_after
        )
        next_attempt = utcnow() + timedelta(seconds=delay)
        log.warning(
            "instance %s: attempt %d failed: %s; next attempt in %.1fs",
            where.instance_id,
            attempts,
            error,
            delay,
            extra=ids,
        )
        retry = partial(
            deliveries.record_failure,
            delivered_seq=cursor,
            attempts=attempts,
            next_attempt=next_attempt,
        )
        await self._write(retry, where, error, history_json)
        return Verdict(parked=False, next_attempt=next_attempt)

    async def _write(
        self, write: Callable[..., Awaitable[Any]], where: Where, error: str, history: str
    ) -> None:
        await in_transaction(
            self.store,
            partial(
                write,
                instance_id=where.instance_id,
                owner=where.owner,
                fence=where.fence,
                error=error,
                attempts_json=history,
            ),
        )


async def redeliver_parked(
    store: Store,
    instance_id: str,
    sequences: list[int],
    content_filter: EventFilter | None,
    hand_over: Callable[[events.StoredEvent], Awaitable[None]],
) -> None:
    """Delivers the parked events an operator asked to redeliver, removing each from
    ``sequences`` once done; one that fails again stays parked, with why."""
    async with store.reader() as session:
        found = {
            e.sequence: e for e in await events.events_between(session, sequences[0], sequences[-1])
        }
    for sequence in list(sequences):
        stored = found.get(sequence)
        error = "the event was purged" if stored is None else ""
        if stored is not None and content_filter is not None:
            choice = choose(content_filter, [stored], stored.sequence - 1)
            error = choice.error
            if not choice.chosen:
                stored = None  # filtered out now (or failed: error says why)
        if stored is not None:
            try:
                await hand_over(stored)
            except Exception as exc:
                error = failure_text(exc)
        if error:  # it stays parked, and the operator who asked should hear why
            _log_stays_parked(instance_id, stored, sequence, error)
        await in_transaction(
            store,
            partial(
                deliveries.finish_redelivery,
                instance_id=instance_id,
                sequence=sequence,
                error=error,
            ),
        )
        sequences.remove(sequence)


def _log_stays_parked(
    instance_id: str, stored: events.StoredEvent | None, sequence: int, error: str
) -> None:
    event_id = stored.id if stored is not None else ""
    log.warning(
        "instance %s: redelivery of parked event %s (sequence %d) failed; it stays parked: %s",
        instance_id,
        event_id,
        sequence,
        error,
        extra={"instance": instance_id, "event_id": event_id, "action": "redeliver"},
    )
