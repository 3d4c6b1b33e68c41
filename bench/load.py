"""The load generator: runs in its own process so its CPU never counts as the driver's.

It sends pre-serialized requests over a raw-bytes gRPC method (no client-side encoding in the
loop) and decodes only the small replies, doing exactly the same work against the real API
server and against the bare echo server, so their rates compare like for like.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc

from listener.v1 import event_service_pb2

PUBLISH_EVENT = "/listener.v1.EventService/PublishEvent"
PUBLISH_EVENTS = "/listener.v1.EventService/PublishEvents"


@dataclass(frozen=True)
class LoadSpec:
    """What to send. Closed loop (``rate`` 0): ``concurrency`` callers back to back, for
    ``duration`` seconds after ``warmup`` or until ``calls`` calls. Open loop: calls started
    at ``rate`` per second for ``duration`` seconds, whatever the replies do."""

    addr: str
    method: str
    payload: bytes
    events_per_call: int = 1
    concurrency: int = 1
    duration: float = 0.0
    warmup: float = 0.0
    calls: int = 0
    rate: float = 0.0
    record: bool = False  # keep (sequence, ack wall time) of every published event
    channels: int = 1  # connections the callers share round-robin (api_workers: >1)


@dataclass
class LoadResult:
    calls: int = 0
    events: int = 0
    acked_events: int = 0  # every acked event, warm-up and late calls included (CPU per event)
    errors: int = 0
    error_sample: str = ""
    started: float = 0.0  # wall clock (time.time()) at the start of the measured window
    elapsed: float = 0.0
    first_sequence: int = 0
    max_sequence: int = 0
    late: int = 0  # calls that completed only after the window (a stalled server)
    slowest_ms: float = 0.0  # the longest call, late ones included
    cpu_pct: float = 0.0  # the load generator's own CPU share (of one core) meanwhile
    rtt_ms: list[float] = field(default_factory=list)  # per call, sorted
    acks: list[tuple[int, float]] = field(default_factory=list)

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed if self.elapsed > 0 else 0.0

    def rtt(self, q: float) -> float:
        if not self.rtt_ms:
            return 0.0
        return self.rtt_ms[min(len(self.rtt_ms) - 1, int(q * len(self.rtt_ms)))]


class _Run:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.result = LoadResult()
        self.window_start = 0.0
        self.window_end = float("inf")
        self.single = spec.method.endswith("/PublishEvent") or spec.method.endswith("/Single")

    def _sequences(self, reply: bytes) -> list[int]:
        if self.single:
            return [event_service_pb2.PublishEventResponse.FromString(reply).sequence]
        events = event_service_pb2.PublishEventsResponse.FromString(reply).events
        if self.spec.record:
            return [e.sequence for e in events]
        return [events[0].sequence, events[-1].sequence] if events else []

    async def call(self, stub: grpc.aio.UnaryUnaryMultiCallable) -> None:
        started = time.perf_counter()
        try:
            reply = await stub(self.spec.payload, timeout=60)
        except grpc.aio.AioRpcError as exc:
            self.result.errors += 1
            if not self.result.error_sample:
                self.result.error_sample = f"{exc.code().name}: {exc.details()}"
            await asyncio.sleep(0.01)
            return
        done = time.perf_counter()
        r = self.result
        r.acked_events += self.spec.events_per_call
        r.slowest_ms = max(r.slowest_ms, (done - started) * 1000)
        if done > self.window_end:
            r.late += 1
        if done < self.window_start or done > self.window_end:
            return
        r.calls += 1
        r.events += self.spec.events_per_call
        r.rtt_ms.append((done - started) * 1000)
        seqs = self._sequences(reply)
        if seqs:
            r.max_sequence = max(r.max_sequence, seqs[-1])
            r.first_sequence = min(r.first_sequence or seqs[0], seqs[0])
            if self.spec.record:
                now = time.time()
                r.acks.extend((s, now) for s in seqs)

    async def closed(self, stubs: list[grpc.aio.UnaryUnaryMultiCallable]) -> None:
        spec = self.spec
        now = time.perf_counter()
        self.window_start = now + spec.warmup
        if spec.duration:
            self.window_end = self.window_start + spec.duration
        issued = 0

        async def caller(stub: grpc.aio.UnaryUnaryMultiCallable) -> None:
            nonlocal issued
            while time.perf_counter() < self.window_end:
                if spec.calls:
                    if issued >= spec.calls:
                        return
                    issued += 1
                await self.call(stub)

        self.result.started = time.time() + spec.warmup
        await asyncio.gather(*(caller(stubs[i % len(stubs)]) for i in range(spec.concurrency)))
        end = min(time.perf_counter(), self.window_end)
        self.result.elapsed = end - self.window_start

    async def open(self, stub: grpc.aio.UnaryUnaryMultiCallable) -> None:
        spec = self.spec
        total = int(spec.rate * spec.duration)
        start = time.perf_counter()
        self.window_start = start
        self.result.started = time.time()
        limit = asyncio.Semaphore(max(spec.concurrency, 1))
        tasks: list[asyncio.Task[None]] = []

        async def one() -> None:
            async with limit:
                await self.call(stub)

        for i in range(total):
            delay = start + i / spec.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        self.result.elapsed = time.perf_counter() - start


async def _run(spec: LoadSpec) -> LoadResult:
    options = [
        ("grpc.max_send_message_length", 64 * 2**20),
        ("grpc.max_receive_message_length", 64 * 2**20),
    ]
    if spec.channels > 1:  # a connection each, not one shared by grpc's global pool
        options.append(("grpc.use_local_subchannel_pool", 1))
    channels = [grpc.aio.insecure_channel(spec.addr, options=options) for _ in range(spec.channels)]
    try:
        for channel in channels:
            async with asyncio.timeout(10):
                await channel.channel_ready()
        stubs = [channel.unary_unary(spec.method) for channel in channels]
        run = _Run(spec)
        cpu, wall = time.process_time(), time.perf_counter()
        if spec.rate:
            await run.open(stubs[0])
        else:
            await run.closed(stubs)
        run.result.cpu_pct = 100 * (time.process_time() - cpu) / (time.perf_counter() - wall)
    finally:
        for channel in channels:
            await channel.close()
    run.result.rtt_ms.sort()
    return run.result


def run(spec: LoadSpec) -> LoadResult:
    """Entry point in the worker process."""
    return asyncio.run(_run(spec))


def warm() -> int:
    """Imports everything once, so the first measured run does not pay for it."""
    return 0
