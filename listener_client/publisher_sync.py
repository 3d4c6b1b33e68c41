"""``SyncPublisher``: the asyncio ``Publisher`` on a thread of its own, for synchronous callers
(Airflow's listener hooks, scripts, a web app's request thread).

The caller's thread checks the event, applies the buffer policy itself (a semaphore of
``buffer_size`` slots: ``when_full="fail"`` refuses at once, ``"block"`` waits up to
``block_timeout``) and appends to a hand-over queue; batching, retries and the network run on
the publisher's thread. A publish therefore never waits on that thread, and a burst of
publishes wakes it once, not once per event.

    with SyncPublisher("127.0.0.1:50051", token=...) as publisher:
        future = publisher.publish({"task_fail": {"task_name": "extract"}})
        future.result()          # PublishResult(id=..., sequence=...), when needed
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Coroutine, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar

from listener.v1 import event_pb2
from listener_client.errors import BufferFullError, ListenerClientError, PublisherClosedError
from listener_client.publisher import Publisher
from listener_client.publishing import PublisherStats, PublishResult, check_event
from listener_client.values import EventLike, to_event

T = TypeVar("T")
Handover = tuple[event_pb2.ListenerEvent, "concurrent.futures.Future[PublishResult]"]


class SyncPublisher:
    """Takes the same arguments as :class:`Publisher`; every method is synchronous and safe
    to call from any thread. ``publish`` returns a ``concurrent.futures.Future``."""

    def __init__(self, targets: str | Sequence[str], **options: Any) -> None:
        self._publisher = Publisher(targets, **options)  # checks the options here
        self._slots = threading.Semaphore(self._publisher.buffer_size)
        self._pending: deque[Handover] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="listener-publisher", daemon=True
        )
        self._thread.start()

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
        if self._closed:
            raise PublisherClosedError("the publisher is closed")
        publisher = self._publisher
        if publisher.when_full == "fail":
            taken = self._slots.acquire(blocking=False)
        else:
            taken = self._slots.acquire(timeout=publisher.block_timeout)
        if not taken:
            size = publisher.buffer_size
            if publisher.when_full == "fail":
                raise BufferFullError(f"the publisher's buffer holds {size} events")
            raise BufferFullError(
                f"the publisher's buffer stayed full ({size} events) for {publisher.block_timeout}s"
            )
        result: concurrent.futures.Future[PublishResult] = concurrent.futures.Future()
        with self._lock:
            if self._closed:  # closed while this call waited for room
                self._slots.release()
                raise PublisherClosedError("the publisher is closed")
            wake = not self._pending  # otherwise a drain is already on its way
            self._pending.append((message, result))
        if wake:
            self._loop.call_soon_threadsafe(self._drain)
        return result

    def flush(self, timeout: float | None = None) -> None:
        """Waits until every event published before the call is acknowledged or failed;
        raises TimeoutError after ``timeout`` seconds (the events stay buffered)."""
        self._run(self._flush(), timeout)

    def close(self, timeout: float | None = None) -> None:
        """Waits for the buffered events (up to ``timeout``; what is still unacknowledged then
        fails with PublisherClosedError), then stops the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._close(timeout), self._loop).result()
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

    # -- on the publisher's thread ------------------------------------------------------

    def _drain(self) -> None:
        """Moves the handed-over events into the publisher, in the order they came."""
        with self._lock:
            items = list(self._pending)
            self._pending.clear()
        for message, result in items:
            try:
                inner = self._publisher.publish_nowait(message)
            except ListenerClientError as exc:
                self._slots.release()
                result.set_exception(exc)
                continue
            inner.add_done_callback(partial(self._settle, result))

    def _settle(
        self, result: concurrent.futures.Future[PublishResult], inner: asyncio.Future[PublishResult]
    ) -> None:
        self._slots.release()
        if inner.cancelled():
            result.cancel()
        elif (error := inner.exception()) is not None:
            result.set_exception(error)
        else:
            result.set_result(inner.result())

    async def _flush(self) -> None:
        self._drain()
        await self._publisher.flush()

    async def _close(self, timeout: float | None) -> None:
        self._drain()
        await self._publisher.close(timeout)

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
