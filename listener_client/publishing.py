"""What ``Publisher`` and ``SyncPublisher`` are made of: what a publish returns, the counters,
the retry policy, the checks of its settings and of an event before it joins a batch, the
buffer's items and how a batch is taken from it, and the API servers it sends to."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import grpc

from listener import event_types
from listener.v1 import event_pb2, event_service_pb2_grpc
from listener_client.channels import open_channel

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


def checked_targets(
    targets: str | Sequence[str],
    batch_size: int,
    buffer_size: int,
    max_batch_bytes: int,
    linger: float,
    block_timeout: float,
    down_for: float,
) -> list[str]:
    """The target addresses, once the sizes and times make sense (ValueError if not)."""
    addresses = [targets] if isinstance(targets, str) else list(targets)
    addresses = [a.strip() for a in addresses if a.strip()]
    if not addresses:
        raise ValueError("at least one target (host:port) is needed")
    if batch_size < 1 or buffer_size < 1 or max_batch_bytes < 1:
        raise ValueError("batch_size, buffer_size and max_batch_bytes must be positive")
    if linger < 0 or block_timeout < 0 or down_for < 0:
        raise ValueError("linger, block_timeout and down_for must not be negative")
    return addresses


def checked_when_full(value: str) -> Literal["block", "fail"]:
    if value not in ("block", "fail"):
        raise ValueError(f'when_full is "block" or "fail", not {value!r}')
    return cast(Literal["block", "fail"], value)


class Item:
    """An event in the buffer: its message, size, future and when it arrived."""

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


class Target:
    """An API server the publisher sends to, and until when it is skipped after a refusal."""

    __slots__ = ("address", "channel", "down_until", "sent", "stub")

    def __init__(self, address: str, channel: grpc.aio.Channel) -> None:
        self.address = address
        self.channel = channel
        self.stub = event_service_pb2_grpc.EventServiceStub(channel)
        self.down_until = 0.0
        self.sent = 0


def take_batch(queue: deque[Item], batch_size: int, max_bytes: int) -> list[Item]:
    """The next batch off the queue: at least one event, then up to ``batch_size`` events or
    ``max_bytes`` serialized."""
    batch = [queue.popleft()]
    size = batch[0].size
    while queue and len(batch) < batch_size:
        size += queue[0].size
        if size > max_bytes:
            break
        batch.append(queue.popleft())
    return batch


class Targets:
    """The API servers a publisher sends to, in round-robin order, skipping for ``down_for``
    seconds one that refused a connection."""

    def __init__(self, targets: list[Target], down_for: float) -> None:
        self.all = targets
        self.down_for = down_for
        self._next = 0

    @classmethod
    def open(
        cls,
        addresses: list[str],
        max_batch_bytes: int,
        down_for: float,
        channel_args: dict[str, Any],
    ) -> Targets:
        options: list[tuple[str, Any]] = [
            ("grpc.enable_retries", 0),  # the publisher retries, with the batch's request_id
            ("grpc.max_send_message_length", max(64 << 20, max_batch_bytes * 2)),
            ("grpc.max_receive_message_length", 64 << 20),
            # Come back quickly after a server restart instead of sitting out a long backoff.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        targets = [Target(a, open_channel(a, options, **channel_args)) for a in addresses]
        return cls(targets, down_for)

    def pick(self, now: float) -> Target:
        """The next target in round-robin order that is not marked down; when all are, the
        one that comes back first."""
        count = len(self.all)
        for step in range(count):
            target = self.all[(self._next + step) % count]
            if target.down_until <= now:
                self._next = (self._next + step + 1) % count
                return target
        return min(self.all, key=lambda t: t.down_until)

    def refused(self, target: Target, now: float) -> bool:
        """Marks ``target`` down after UNAVAILABLE (when there are others); whether another
        is up to go to at once."""
        if len(self.all) < 2:
            return False
        target.down_until = now + self.down_for
        return any(t.down_until <= now for t in self.all)

    def sent(self) -> dict[str, int]:
        return {t.address: t.sent for t in self.all}

    async def close(self) -> None:
        for target in self.all:
            await target.channel.close()
