"""``Publisher``: the scheduler's side of publishing, batched, retried and bounded.

A scheduler emits events one at a time from many code paths and must not wait on the network
for each. The publisher takes an event into a bounded buffer and returns a future at once;
one sender task groups the buffer into ``PublishEvents`` calls (up to ``batch_size`` events,
or whatever arrived within ``linger`` seconds of the oldest), one call in flight at a time,
so the store keeps each publisher's events in the order they were published.

Each batch gets a ``request_id`` that every retry of it reuses: a batch whose reply was lost
(a timeout, a server killed after its commit) is answered from the store the second time
rather than stored again. UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED are retried
with exponential backoff and jitter, round robin over the given API servers, skipping for a
while one that refused a connection; any other error fails that batch's futures.

    async with Publisher(["api-1:50051", "api-2:50051"], token=...) as publisher:
        done = await publisher.publish({"task_fail": {"task_name": "extract"}})
        result = await done          # PublishResult(id=..., sequence=...)
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal, Self

import grpc

from listener.v1 import event_pb2, event_service_pb2
from listener_client.channels import PathLike
from listener_client.errors import BufferFullError, ListenerClientError, PublisherClosedError
from listener_client.publishing import (
    RETRYABLE,
    Item,
    PublisherStats,
    PublishResult,
    RetryPolicy,
    Targets,
    check_event,
    checked_targets,
    checked_when_full,
    take_batch,
)
from listener_client.values import EventLike, to_event


class Publisher:
    """Batches events into ``PublishEvents`` calls; see the module's docstring.

    ``targets``: one ``host:port`` or several (round robin). ``token``, ``tls_ca``,
    ``tls_cert``, ``tls_key``, ``tls``, ``tls_server_name``: as for ``ListenerClient``.
    ``batch_size`` events or ``max_batch_bytes`` (serialized) at most per call; ``linger``
    seconds a partial batch waits for more. ``buffer_size``: events taken and not yet
    acknowledged; when it is full, ``when_full="block"`` waits up to ``block_timeout`` seconds
    for room, ``"fail"`` raises :class:`BufferFullError` at once. ``retry``: see RetryPolicy.
    ``interceptors``: grpc.aio client interceptors for every call (tracing, tests).
    """

    def __init__(
        self,
        targets: str | Sequence[str],
        *,
        token: str | None = None,
        tls_ca: PathLike | None = None,
        tls_cert: PathLike | None = None,
        tls_key: PathLike | None = None,
        tls: bool = False,
        tls_server_name: str = "",
        batch_size: int = 500,
        max_batch_bytes: int = 4 << 20,
        linger: float = 0.005,
        buffer_size: int = 10_000,
        when_full: Literal["block", "fail"] = "block",
        block_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        down_for: float = 1.0,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("tls_cert and tls_key go together")
        addresses = checked_targets(
            targets, batch_size, buffer_size, max_batch_bytes, linger, block_timeout, down_for
        )
        self.when_full = checked_when_full(when_full)
        self.targets = addresses
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.linger = linger
        self.buffer_size = buffer_size
        self.block_timeout = block_timeout
        self.retry = retry or RetryPolicy()
        self.down_for = down_for
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._channel_args: dict[str, Any] = {
            "tls": tls,
            "tls_ca": tls_ca,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
            "tls_server_name": tls_server_name,
            "interceptors": list(interceptors) or None,
        }
        self._targets: Targets | None = None
        self._queue: deque[Item] = deque()
        self._inflight: list[Item] = []
        self._accepted = 0  # events taken, ever
        self._taken = 0  # events handed to a batch, ever
        self._resolved = 0  # events whose future is done, ever (in acceptance order)
        self._flush_upto = 0
        self._sent = self._retried = self._failed = self._batches = 0
        self._closing = False
        self._closed = False
        self._sender: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._room_waiters: list[asyncio.Future[None]] = []
        self._flushers: list[tuple[int, asyncio.Future[None]]] = []

    # -- public -------------------------------------------------------------------------

    @property
    def stats(self) -> PublisherStats:
        return PublisherStats(
            buffered=self._accepted - self._resolved,
            sent=self._sent,
            retried=self._retried,
            failed=self._failed,
            batches=self._batches,
        )

    @property
    def sent_by_target(self) -> dict[str, int]:
        """Acknowledged events per API server address: where the round robin sent them."""
        return self._targets.sent() if self._targets is not None else {}

    async def publish(self, event: EventLike) -> asyncio.Future[PublishResult]:
        """Takes ``event`` (a ListenerEvent or its JSON form) into the buffer and returns the
        future of its ``PublishResult``, done once the store has it. Raises ValueError for an
        event the server would refuse, BufferFullError per ``when_full``, and
        PublisherClosedError after ``close()``."""
        message = self._take_in(event)
        if self._accepted - self._resolved >= self.buffer_size:
            await self._wait_for_room()
        return self._accept(message)

    def publish_nowait(self, event: EventLike) -> asyncio.Future[PublishResult]:
        """``publish`` for code that cannot await (a callback in the loop): a full buffer
        raises BufferFullError at once, whatever ``when_full`` says."""
        message = self._take_in(event)
        if self._accepted - self._resolved >= self.buffer_size:
            raise BufferFullError(f"the publisher's buffer holds {self.buffer_size} events")
        return self._accept(message)

    async def flush(self) -> None:
        """Sends what is buffered now without waiting out the linger, and returns once every
        event taken before the call is acknowledged or failed."""
        await self._wait_resolved(self._accepted)

    async def close(self, timeout: float | None = None) -> None:
        """Stops taking events, waits for the buffered ones (all of them, or up to ``timeout``
        seconds; those still unacknowledged then fail with PublisherClosedError) and closes
        the channels. Idempotent."""
        if self._closed:
            return
        self._closing = True
        if self._sender is not None:
            self._wake_room()  # blocked publishers give up
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wait_resolved(self._accepted)
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._abandon()
        self._closed = True
        if self._targets is not None:
            await self._targets.close()

    async def __aenter__(self) -> Self:
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- taking events ------------------------------------------------------------------

    def _take_in(self, event: EventLike) -> event_pb2.ListenerEvent:
        message = to_event(event)
        check_event(message)
        self._start()
        if self._closing:
            raise PublisherClosedError("the publisher is closed")
        return message

    def _start(self) -> None:
        """Opens the channels and the sender in the running loop (not in ``__init__``, so a
        publisher can be made outside one, as the thread-backed variant does)."""
        if self._sender is not None or self._closing:
            return
        self._targets = Targets.open(
            self.targets, self.max_batch_bytes, self.down_for, self._channel_args
        )
        self._wakeup = asyncio.Event()
        self._sender = asyncio.get_running_loop().create_task(self._run(), name="publisher")

    async def _wait_for_room(self) -> None:
        if self.when_full == "fail":
            raise BufferFullError(f"the publisher's buffer holds {self.buffer_size} events")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.block_timeout
        while self._accepted - self._resolved >= self.buffer_size:
            left = deadline - loop.time()
            if left <= 0:
                raise BufferFullError(
                    f"the publisher's buffer stayed full ({self.buffer_size} events) "
                    f"for {self.block_timeout}s"
                )
            waiter: asyncio.Future[None] = loop.create_future()
            self._room_waiters.append(waiter)
            try:
                async with asyncio.timeout(left):
                    await waiter
            except TimeoutError:
                pass
            finally:
                if waiter in self._room_waiters:
                    self._room_waiters.remove(waiter)
            if self._closing:
                raise PublisherClosedError("the publisher is closed")

    def _accept(self, message: event_pb2.ListenerEvent) -> asyncio.Future[PublishResult]:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        item = Item(message, loop.create_future(), loop.time())
        if not self._queue:
            self._wakeup.set()
        self._queue.append(item)
        self._accepted += 1
        if len(self._queue) == self.batch_size:
            self._wakeup.set()
        return item.future

    async def _wait_resolved(self, upto: int) -> None:
        if self._resolved >= upto:
            return
        assert self._wakeup is not None
        self._flush_upto = max(self._flush_upto, upto)
        self._wakeup.set()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushers.append((upto, waiter))
        await waiter

    # -- sending ------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            hurry = self._closing or self._flush_upto > self._taken
            if len(self._queue) < self.batch_size and not hurry:
                delay = self._queue[0].arrival + self.linger - loop.time()
                if delay > 0:
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wakeup.wait()
                    continue
            self._inflight = take_batch(self._queue, self.batch_size, self.max_batch_bytes)
            self._taken += len(self._inflight)
            await self._send(self._inflight)
            self._inflight = []

    async def _send(self, batch: list[Item]) -> None:
        request = event_service_pb2.PublishEventsRequest(
            events=[item.message for item in batch], request_id=str(uuid.uuid4())
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 0
        assert self._targets is not None
        while True:
            target = self._targets.pick(loop.time())
            try:
                reply = await target.stub.PublishEvents(
                    request, timeout=self.retry.call_timeout, metadata=self._metadata
                )
            except grpc.aio.AioRpcError as exc:
                error = ListenerClientError.from_rpc_error(exc)
                give_up = self.retry.give_up_after
                if exc.code() not in RETRYABLE or (
                    give_up is not None and loop.time() - started >= give_up
                ):
                    self._resolve(batch, error=error)
                    return
                attempt += 1
                self._retried += 1
                unavailable = exc.code() == grpc.StatusCode.UNAVAILABLE
                if unavailable and self._targets.refused(target, loop.time()):
                    continue  # another server is up: go there now
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            if len(reply.events) != len(batch):
                error = ListenerClientError(
                    grpc.StatusCode.INTERNAL,
                    f"{len(reply.events)} results for a batch of {len(batch)} events",
                )
                self._resolve(batch, error=error)
                return
            self._batches += 1
            target.sent += len(batch)
            self._resolve(batch, reply=reply)
            return

    def _resolve(
        self,
        batch: list[Item],
        *,
        reply: event_service_pb2.PublishEventsResponse | None = None,
        error: BaseException | None = None,
    ) -> None:
        if reply is not None:
            for item, stored in zip(batch, reply.events, strict=True):
                if not item.future.done():
                    item.future.set_result(PublishResult(stored.id, stored.sequence))
            self._sent += len(batch)
        else:
            assert error is not None
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            self._failed += len(batch)
        self._resolved += len(batch)
        self._released()

    def _released(self) -> None:
        """Wakes the flushers whose events are all done, and the publishers waiting for room."""
        if self._flushers:
            still = []
            for upto, waiter in self._flushers:
                if self._resolved >= upto:
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    still.append((upto, waiter))
            self._flushers = still
        self._wake_room()

    def _wake_room(self) -> None:
        waiters, self._room_waiters = self._room_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _abandon(self) -> None:
        """Fails what ``close(timeout)`` could not wait for."""
        left = [*self._inflight, *self._queue]
        self._queue.clear()
        self._inflight = []
        error = PublisherClosedError("closed before the store acknowledged this event")
        pending = [item for item in left if not item.future.done()]
        for item in pending:
            item.future.set_exception(error)
        self._failed += len(pending)
        self._resolved = self._accepted
        self._released()
        for _, waiter in self._flushers:
            if not waiter.done():
                waiter.set_result(None)
        self._flushers = []
