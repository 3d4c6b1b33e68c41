"""The wake-up nudge to one alert server as a message on a ``NotifyStream`` kept open.

A unary ``Notify`` per group commit was the largest per-event cost left in both servers
(BENCHMARKS.md, round three, third sitting): the call's sends and thread wake-ups on the API
server, grpc.aio's per-call handling on the alert server. On an open stream a nudge is one
message. While a write is in progress, later nudges coalesce: only the newest sequence follows
(a nudge only raises a maximum).

Nothing is lost for want of the stream: when it cannot be opened or breaks, the owner is told
(``fallback``) and sends the newest sequence by unary ``Notify``, and ``send`` answers False
(use ``Notify``) until the stream is tried again: after ``REOPEN_AFTER`` seconds, or
``REOPEN_UNIMPLEMENTED_AFTER`` when the alert server has no ``NotifyStream`` (an older one,
during a rolling upgrade). The alert server's slow counter poll stays behind both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from listener.alert.v1 import plugin_host_pb2 as pb
from listener.alert.v1 import plugin_host_pb2_grpc
from listener_core import stage_trace

log = logging.getLogger(__name__)

#: Seconds a broken stream stays closed before the next nudge reopens it.
REOPEN_AFTER = 1.0
#: The same after UNIMPLEMENTED: an older alert server, asked again now and then.
REOPEN_UNIMPLEMENTED_AFTER = 60.0
#: A write still in progress after this many seconds (a peer gone without closing the
#: connection) breaks the stream, as a unary Notify's deadline would fail it.
WRITE_TIMEOUT = 2.0


class NudgeStream:
    """One alert server's open ``NotifyStream``, opened at the first nudge."""

    def __init__(
        self,
        stub: plugin_host_pb2_grpc.PluginHostServiceStub,
        target: str,
        fallback: Callable[[], None],
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """``metadata`` goes with the stream's start (the internal token: the channel's
        interceptor covers unary calls only)."""
        self._stub = stub
        self._metadata = metadata or None
        self._target = target
        self._fallback = fallback
        self._call: Any = None  # the open stream's call
        self._writer: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._newest = 0  # the newest sequence asked for
        self._written = 0  # the newest one written on the stream
        self._writing_since = 0.0
        self._closed_until = 0.0  # monotonic time before which the stream is not tried
        self._closing = False

    @property
    def usable(self) -> bool:
        return not self._closing and time.monotonic() >= self._closed_until

    def send(self, sequence: int) -> bool:
        """Has ``sequence`` written on the stream (now, or after the write in progress);
        False while the stream is closed: the caller sends a unary Notify instead."""
        if not self.usable:
            return False
        if sequence <= self._newest:
            return True
        self._newest = sequence
        if self._writer is None:
            self._writing_since = time.monotonic()
            self._writer = asyncio.create_task(self._write())
        elif time.monotonic() - self._writing_since > WRITE_TIMEOUT and self._call is not None:
            self._call.cancel()  # the watcher closes the stream and falls back
            return False
        return True

    async def _write(self) -> None:
        try:
            call = self._call
            if call is None:
                call = self._call = self._stub.NotifyStream(metadata=self._metadata)
                self._watcher = asyncio.create_task(self._watch(call))
            while self._written < self._newest:
                sequence = self._written = self._newest
                self._writing_since = time.monotonic()
                stage_trace.mark_upto("notify_sent", sequence)
                await call.write(pb.NotifyRequest(max_sequence=sequence))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the call has ended: the watcher closes the stream and falls back
        finally:
            self._writer = None

    async def _watch(self, call: Any) -> None:
        """Waits for the stream's end (the alert server never ends it on its own)."""
        try:
            await call
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closing or (task is not None and task.cancelling()):
                raise
            code = grpc.StatusCode.CANCELLED  # cancelled here: a write that hung
        if self._call is call:
            self._call = None
        if self._closing:
            return
        if code == grpc.StatusCode.UNIMPLEMENTED:
            self._closed_until = time.monotonic() + REOPEN_UNIMPLEMENTED_AFTER
            log.info(
                "alert server %s has no NotifyStream (an older version): nudges by Notify, "
                "the stream tried again in %.0f s",
                self._target,
                REOPEN_UNIMPLEMENTED_AFTER,
            )
        else:
            self._closed_until = time.monotonic() + REOPEN_AFTER
            log.debug("NotifyStream to %s ended (%s): nudges by Notify", self._target, code.name)
        self._written = 0  # a new stream starts from the newest sequence again
        self._newest = 0
        self._fallback()  # what the stream may have lost goes by Notify

    async def close(self) -> None:
        self._closing = True
        if self._call is not None:
            self._call.cancel()
        for task in (self._writer, self._watcher):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
