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
import random
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import grpc

from listener import event_types
from listener.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc
from listener_client.channels import PathLike, open_channel
from listener_client.errors import BufferFullError, ListenerClientError, PublisherClosedError
from listener_client.values import EventLike, to_event

#: The codes after which the same batch is sent again (with the same request_id).
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
MAX_SOURCE_CHARS = 255


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Where the store put one event: its server-assigned id and its sequence."""

    id: str
    sequence: int


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """Counters since the publisher was made. ``buffered``: taken and not yet acknowledged
    (the buffer's fill, in-flight batch included); ``sent``: acknowledged events; ``retried``:
    calls repeated after a retryable error; ``failed``: events whose future got an error;
    ``batches``: acknowledged PublishEvents calls."""

    buffered: int
    sent: int
    retried: int
    failed: int
    batches: int


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a batch is retried. The n-th wait is ``initial_backoff * multiplier**(n-1)``, capped
    at ``max_backoff``, each scaled by a random factor in ``[1 - jitter, 1]`` so publishers
    that failed together do not come back together. ``call_timeout`` is each call's deadline;
    ``give_up_after`` (seconds from a batch's first attempt; None: never) fails the batch's
    futures with the last error."""

    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.5
    call_timeout: float = 10.0
    give_up_after: float | None = 300.0

    def __post_init__(self) -> None:
        if self.initial_backoff <= 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("need 0 < initial_backoff <= max_backoff")
        if self.multiplier < 1 or not 0 <= self.jitter <= 1 or self.call_timeout <= 0:
            raise ValueError("need multiplier >= 1, 0 <= jitter <= 1 and call_timeout > 0")

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (1 for the first retry)."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return base * (1 - self.jitter * random.random())


def check_event(event: event_pb2.ListenerEvent) -> None:
    """The server's checks that one event can fail, made before it joins a batch: a batch is
    all or nothing, so one bad event must not take the others down with it."""
    which = event.WhichOneof("payload")
    if which is None:
        raise ValueError(f"an event needs a payload (one of {', '.join(event_types.PAYLOAD_TYPE)})")
    if event.type and event.type != event_types.PAYLOAD_TYPE[which]:
        raise ValueError(f"type {event.type} does not match the payload {which}")
    if event.id or event.sequence or event.HasField("publish_time"):
        raise ValueError("id, sequence and publish_time are assigned by the server")
    if len(event.source) > MAX_SOURCE_CHARS:
        raise ValueError(f"source is longer than {MAX_SOURCE_CHARS} characters")


class _Item:
    __slots__ = ("arrival", "future", "message", "size")

    def __init__(
        self,
        message: event_pb2.ListenerEvent,
        future: asyncio.Future[PublishResult],
        arrival: float,
    ) -> None:
        self.message = message
        self.size = message.ByteSize()
        self.future = future
        self.arrival = arrival


class _Target:
    __slots__ = ("address", "channel", "down_until", "sent", "stub")

    def __init__(self, address: str, channel: grpc.aio.Channel) -> None:
        self.address = address
        self.channel = channel
        self.stub = event_service_pb2_grpc.EventServiceStub(channel)
        self.down_until = 0.0
        self.sent = 0


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
        addresses = [targets] if isinstance(targets, str) else list(targets)
        addresses = [a.strip() for a in addresses if a.strip()]
        if not addresses:
            raise ValueError("at least one target (host:port) is needed")
        if batch_size < 1 or buffer_size < 1 or max_batch_bytes < 1:
            raise ValueError("batch_size, buffer_size and max_batch_bytes must be positive")
        if linger < 0 or block_timeout < 0 or down_for < 0:
            raise ValueError("linger, block_timeout and down_for must not be negative")
        if when_full not in ("block", "fail"):
            raise ValueError(f'when_full is "block" or "fail", not {when_full!r}')
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("tls_cert and tls_key go together")
        self.targets = addresses
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.linger = linger
        self.buffer_size = buffer_size
        self.when_full = when_full
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
        self._targets: list[_Target] = []
        self._next = 0
        self._queue: deque[_Item] = deque()
        self._inflight: list[_Item] = []
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
        return {t.address: t.sent for t in self._targets}

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
                await asyncio.wait_for(self._wait_resolved(self._accepted), timeout)
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._abandon()
        self._closed = True
        for target in self._targets:
            await target.channel.close()

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
        options: list[tuple[str, Any]] = [
            ("grpc.enable_retries", 0),  # this class retries, with the batch's request_id
            ("grpc.max_send_message_length", max(64 << 20, self.max_batch_bytes * 2)),
            ("grpc.max_receive_message_length", 64 << 20),
            # Come back quickly after a server restart instead of sitting out a long backoff.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        self._targets = [
            _Target(address, open_channel(address, options, **self._channel_args))
            for address in self.targets
        ]
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
                await asyncio.wait_for(waiter, left)
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
        item = _Item(message, loop.create_future(), loop.time())
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
                        await asyncio.wait_for(self._wakeup.wait(), delay)
                    continue
            self._inflight = self._take()
            await self._send(self._inflight)
            self._inflight = []

    def _take(self) -> list[_Item]:
        batch = [self._queue.popleft()]
        size = batch[0].size
        while self._queue and len(batch) < self.batch_size:
            size += self._queue[0].size
            if size > self.max_batch_bytes:
                break
            batch.append(self._queue.popleft())
        self._taken += len(batch)
        return batch

    async def _send(self, batch: list[_Item]) -> None:
        request = event_service_pb2.PublishEventsRequest(
            events=[item.message for item in batch], request_id=str(uuid.uuid4())
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 0
        while True:
            target = self._pick(loop.time())
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
                now = loop.time()
                if exc.code() == grpc.StatusCode.UNAVAILABLE and len(self._targets) > 1:
                    target.down_until = now + self.down_for
                    if any(t.down_until <= now for t in self._targets):
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

    def _pick(self, now: float) -> _Target:
        """The next target in round-robin order that is not marked down; when all are, the
        one that comes back first."""
        count = len(self._targets)
        for step in range(count):
            target = self._targets[(self._next + step) % count]
            if target.down_until <= now:
                self._next = (self._next + step + 1) % count
                return target
        return min(self._targets, key=lambda t: t.down_until)

    def _resolve(
        self,
        batch: list[_Item],
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
