"""How a plugin object is driven: opened, handed events, failed, retried, parked, closed.

The alert server's delivery loop (``alert_server.delivery``) and ``listener_common.testing``
both call these functions, so a plugin under test meets the same rules it meets in
production: sync handlers off the event loop, the handler timeout, ``DeliveryError``'s
``retry_after`` and ``permanent``, the backoff schedule and the failure policy.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from listener_common.errors import DeliveryError, error_text
from listener_common.events import ListenerEvent
from listener_common.plugin import ListenerPlugin, deliver_batch, supports_batch

__all__ = [
    "Failure",
    "FailurePolicy",
    "OpenFailed",
    "close_plugin",
    "deliver",
    "failure_text",
    "next_delay",
    "open_plugin",
    "retry_delay",
]

_RAND = random.Random()


class _Sequenced(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def sequence(self) -> int: ...


T = TypeVar("T", bound=_Sequenced)


def failure_text(exc: BaseException) -> str:
    """An exception as operators see it: ``ValueError: boom``, or ``handler timed out``."""
    if type(exc) is TimeoutError and not exc.args:  # asyncio's timeout, not a plugin's own
        return "handler timed out"
    return error_text(exc)


@dataclass(frozen=True)
class Failure:
    """A failed hand-over: the event at ``index`` of the batch failed (the head, for a batch
    handler), with the message recorded as the instance's last error."""

    message: str
    index: int
    retry_after: float | None = None
    permanent: bool = False


def _failure(exc: BaseException, index: int, what: str) -> Failure:
    return Failure(
        f"{what}: {failure_text(exc)}",
        index,
        retry_after=exc.retry_after if isinstance(exc, DeliveryError) else None,
        permanent=isinstance(exc, DeliveryError) and exc.permanent,
    )


class OpenFailed(Exception):
    """``open`` raised or timed out; the message is what operators see."""


async def open_plugin(
    plugin_class: type[ListenerPlugin], config: dict[str, Any], timeout: float
) -> ListenerPlugin:
    """A new plugin object, opened with (a copy of) the instance's typed params."""
    plugin = plugin_class()
    try:
        async with asyncio.timeout(timeout):
            await plugin.open(dict(config))
    except Exception as exc:
        raise OpenFailed(f"open failed: {failure_text(exc)}") from exc
    return plugin


async def close_plugin(plugin: ListenerPlugin, timeout: float) -> str:
    """Closes a plugin object; returns what went wrong, or '' (a close never fails delivery)."""
    try:
        async with asyncio.timeout(timeout):
            await plugin.close()
    except Exception as exc:
        return failure_text(exc)
    return ""


def _always() -> bool:
    return True


async def deliver(
    plugin: ListenerPlugin,
    batch: Sequence[T],
    timeout: float,
    convert: Callable[[T], ListenerEvent],
    *,
    call: Callable[[float], AbstractAsyncContextManager[Any]] = asyncio.timeout,
    proceed: Callable[[], bool] = _always,
    stop: tuple[type[BaseException], ...] = (),
) -> tuple[int, Failure | None]:
    """Hands a batch (in sequence order) to the plugin; returns how many of its first events
    were delivered, and the failure that stopped it, if any.

    A plugin with ``on_events`` gets the whole batch at once, delivered or failed together
    within one timeout; otherwise each event goes to ``on_event`` with its own timeout and the
    first failure stops the batch. ``convert`` makes the SDK event from a stored one.

    The host's own reasons to stop are no failure of the plugin: ``proceed()`` is asked before
    each call (False ends the hand-over early), ``call(timeout)`` bounds each call (the alert
    server also cuts it when its lease runs out) and an exception of a ``stop`` type ends the
    hand-over early, without a failure.
    """
    if supports_batch(plugin):
        if not proceed():
            return 0, None
        try:
            sdk_events = [convert(e) for e in batch]
            async with call(timeout):  # asyncio.timeout: no task per call, as wait_for makes
                await deliver_batch(plugin, sdk_events)
        except stop:
            return 0, None
        except Exception as exc:
            head = batch[0]
            return 0, _failure(
                exc, 0, f"batch of {len(batch)} from event {head.id} (sequence {head.sequence})"
            )
        return len(batch), None
    for index, stored in enumerate(batch):
        if not proceed():
            return index, None
        try:
            async with call(timeout):
                await plugin.on_event(convert(stored))
        except stop:
            return index, None
        except Exception as exc:
            return index, _failure(exc, index, f"event {stored.id} (sequence {stored.sequence})")
    return len(batch), None


@dataclass(frozen=True)
class FailurePolicy:
    """What a failed head event does: ``block`` retries it forever (DolphinScheduler's
    behaviour, with backoff); ``park`` moves it to the dead-letter list after ``park_after``
    attempts, or at once when the plugin said the failure is permanent."""

    mode: str = "block"  # or "park"
    park_after: int = 0

    def parks(self, attempts: int, permanent: bool) -> bool:
        if self.mode != "park":
            return False
        return permanent or attempts >= max(1, self.park_after)


def retry_delay(attempt: int, base: float, cap: float, rand: random.Random | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` >= 1 failures so far):
    exponential, capped, with full jitter — uniform in [0, min(cap, base * 2**(attempt-1))] —
    so a destination that is down for an hour sees a few attempts an hour and many instances
    do not retry in lockstep. Full jitter spreads them the most and, in AWS's comparison of
    backoff schemes ("Exponential Backoff And Jitter"), costs the fewest calls and the least
    total time; equal jitter (the top half only) keeps half of each delay in lockstep."""
    exp = min(cap, base * 2.0 ** max(0, attempt - 1))
    return (rand or _RAND).random() * exp


def next_delay(
    attempts: int,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rand: random.Random | None = None,
) -> float:
    """The wait before the next attempt: the backoff, or longer if the plugin asked for it
    with ``DeliveryError(retry_after=...)`` (never longer than ``cap``)."""
    delay = retry_delay(attempts, base, cap, rand)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay
