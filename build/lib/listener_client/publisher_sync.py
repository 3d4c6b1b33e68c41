"""``SyncPublisher``: the asyncio ``Publisher`` on a thread of its own, for synchronous callers
(Airflow's listener hooks, scripts, a web app's request thread).

The caller's thread only checks the event and hands it over; batching, retries and the
network run on the publisher's thread, so a publish never waits longer than the buffer policy
says (``when_full="fail"``: not at all; ``"block"``: up to ``block_timeout``).

    with SyncPublisher("127.0.0.1:50051", token=...) as publisher:
        future = publisher.publish({"task_fail": {"task_name": "extract"}})
        future.result()          # PublishResult(id=..., sequence=...), when needed
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from listener_client.client import EventLike, to_event
from listener_client.errors import PublisherClosedError
from listener_client.publisher import Publisher, PublisherStats, PublishResult, check_event

T = TypeVar("T")


class SyncPublisher:
    """Takes the same arguments as :class:`Publisher`; every method is synchronous and safe
    to call from any thread. ``publish`` returns a ``concurrent.futures.Future``."""

    def __init__(self, targets: str | Sequence[str], **options: Any) -> None:
        self._publisher = Publisher(targets, **options)  # checks the options here
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="listener-publisher", daemon=True
        )
        self._thread.start()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def publisher(self) -> Publisher:
        """The asyncio publisher underneath (its settings; call it only from its thread)."""
        return self._publisher

    @property
    def stats(self) -> PublisherStats:
        return self._publisher.stats

    def publish(self, event: EventLike) -> concurrent.futures.Future[PublishResult]:
        """Hands ``event`` over; the future is done once the store has it. Raises ValueError
        for an event the server would refuse, BufferFullError per the buffer policy, and
        PublisherClosedError after ``close()``."""
        message = to_event(event)
        check_event(message)
        result: concurrent.futures.Future[PublishResult] = concurrent.futures.Future()

        async def hand_over() -> None:
            inner = await self._publisher.publish(message)
            inner.add_done_callback(lambda done: _copy(done, result))

        self._run(hand_over(), None)
        return result

    def flush(self, timeout: float | None = None) -> None:
        """Waits until every event published before the call is acknowledged or failed;
        raises TimeoutError after ``timeout`` seconds (the events stay buffered)."""
        self._run(self._publisher.flush(), timeout)

    def close(self, timeout: float | None = None) -> None:
        """Waits for the buffered events (up to ``timeout``; what is still unacknowledged then
        fails with PublisherClosedError), then stops the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._publisher.close(timeout), self._loop).result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, work: Coroutine[Any, Any, T], timeout: float | None) -> T:
        if self._closed:
            work.close()
            raise PublisherClosedError("the publisher is closed")
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise


def _copy(
    source: asyncio.Future[PublishResult], target: concurrent.futures.Future[PublishResult]
) -> None:
    if source.cancelled():
        target.cancel()
    elif (error := source.exception()) is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())
