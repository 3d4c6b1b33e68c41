"""Drives every alert server the API server knows, over the internal contract.

Which ones: a static list (``alert_targets``), or those found in the store
(``api_server.discovery`` calls ``set_targets`` as they join and leave).

Probing a package needs one alert server's answer; other changes are sent to every alert
server and tolerate one being down, since each reconciles from the store when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc

from api_server import names
from api_server.nudge_stream import NudgeStream
from listener.alert.v1 import plugin_host_pb2 as pb
from listener.alert.v1 import plugin_host_pb2_grpc
from listener_core import errors, stage_trace
from listener_core.auth import BearerToken

log = logging.getLogger(__name__)

_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


Stub = plugin_host_pb2_grpc.PluginHostServiceStub

#: Seconds between two reminders that an alert server is still unreachable.
REMIND_EVERY = 60.0


class Reachability:
    """Logs an alert server's reachability once per change, then a periodic reminder.

    While one is down every publish's nudge fails: logging each failure wrote about 55
    lines a second per API server."""

    def __init__(self, target: str, remind_every: float = REMIND_EVERY) -> None:
        self.target = target
        self.remind_every = remind_every
        self.reachable = True
        self.failures = 0
        self._down_since = 0.0
        self._reminded = 0.0

    def failed(self, details: str | None) -> None:
        now = time.monotonic()
        self.failures += 1
        if self.reachable:
            self.reachable = False
            self._down_since = self._reminded = now
            log.warning(
                "alert server %s unreachable: %s (reported again every %.0f s while it lasts)",
                self.target,
                details,
                self.remind_every,
            )
        elif now - self._reminded >= self.remind_every:
            self._reminded = now
            log.warning(
                "alert server %s still unreachable after %.0f s (%d failed calls): %s",
                self.target,
                now - self._down_since,
                self.failures,
                details,
            )

    def succeeded(self) -> None:
        if not self.reachable:
            log.info(
                "alert server %s reachable again after %.1f s (%d failed calls)",
                self.target,
                time.monotonic() - self._down_since,
                self.failures,
            )
        self.reachable = True
        self.failures = 0


#: Notify rounds (one call to each alert server) unanswered at once; see ``notify``.
NOTIFIES_IN_FLIGHT = 4


async def _notify(request: pb.NotifyRequest, stub: Stub) -> None:
    await stub.Notify(request, timeout=2.0)


@dataclass
class _Member:
    channel: grpc.aio.Channel
    stub: Stub
    reach: Reachability
    nudges: NudgeStream  # the hot path's wake-ups; Notify while it is closed


class AlertFleet:
    def __init__(
        self,
        targets: Sequence[str],
        *,
        timeout: float,
        max_message_bytes: int,
        credentials: grpc.ChannelCredentials | None = None,
        internal_token: str = "",
        server_name: str = "",
        remind_every: float = REMIND_EVERY,
    ) -> None:
        """``credentials`` make the channels TLS (mTLS with a client certificate);
        ``internal_token`` goes with every call; ``server_name`` is the name to expect in the
        alert servers' certificates when it is not the host in ``targets``. The targets may
        change later (``set_targets``: discovery through the store)."""
        self._options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self._credentials = credentials
        self._interceptors = [BearerToken(internal_token)] if internal_token else None
        self._stream_metadata = (
            (("authorization", f"Bearer {internal_token}"),) if internal_token else ()
        )
        self._remind_every = remind_every
        self.timeout = timeout
        self._members: dict[str, _Member] = {}
        for target in dict.fromkeys(targets):
            self._members[target] = self._member(target)
        #: Called when a call finds no alert server at all (discovery reads the store now).
        self.refresh: Callable[[], Awaitable[None]] | None = None
        self._notify_seq = 0  # the newest committed sequence reported to this fleet
        self._notify_sent = 0  # the newest one a Notify went out for
        self._notifies: set[asyncio.Task[Any]] = set()  # Notify rounds in flight

    def _member(self, target: str) -> _Member:
        channel = (
            grpc.aio.secure_channel(
                target, self._credentials, options=self._options, interceptors=self._interceptors
            )
            if self._credentials is not None
            else grpc.aio.insecure_channel(
                target, options=self._options, interceptors=self._interceptors
            )
        )
        stub = plugin_host_pb2_grpc.PluginHostServiceStub(channel)
        return _Member(
            channel,
            stub,
            Reachability(target, self._remind_every),
            NudgeStream(stub, target, partial(self._fall_back, target), self._stream_metadata),
        )

    @property
    def targets(self) -> list[str]:
        return list(self._members)

    @property
    def reach(self) -> dict[str, Reachability]:
        return {t: m.reach for t, m in self._members.items()}

    async def set_targets(self, targets: Sequence[str]) -> tuple[list[str], list[str]]:
        """Drives exactly ``targets`` from now on; returns those added and removed. Calls in
        flight to a removed one finish on its channel, closed with a grace."""
        wanted = list(dict.fromkeys(targets))
        added = [t for t in wanted if t not in self._members]
        removed = [t for t in self._members if t not in wanted]
        gone = [self._members.pop(t) for t in removed]
        for target in added:
            self._members[target] = self._member(target)
        for member in gone:
            await member.nudges.close()
            await member.channel.close(grace=self.timeout)
        return added, removed

    async def _live(self) -> list[tuple[str, _Member]]:
        if not self._members and self.refresh is not None:
            await self.refresh()
        return list(self._members.items())

    async def close(self) -> None:
        for task in list(self._notifies):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for member in self._members.values():
            await member.nudges.close()
            await member.channel.close()

    async def probe(
        self, plugin_id: str, sha256: str, package: bytes, isolation: str = ""
    ) -> pb.LoadPluginResponse:
        """Has an alert server load the package and describe it, without keeping it
        (a package meant for process isolation is checked in a child process)."""
        request = pb.LoadPluginRequest(
            plugin_id=plugin_id, sha256=sha256, package=package, dry_run=True, isolation=isolation
        )
        last: grpc.aio.AioRpcError | None = None
        for _, member in await self._live():
            try:
                reply = await member.stub.LoadPlugin(request, timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _UNREACHABLE:
                    member.reach.failed(exc.details())
                    last = exc
                    continue
                raise self._translate(exc) from None
            member.reach.succeeded()
            return reply  # type: ignore[no-any-return]
        raise errors.Unavailable(
            "no alert server could check the package: "
            + (
                last.details() or "unreachable"
                if last
                else "none is alive (no recent heartbeat in the store)"
            ),
            reason="ALERT_UNAVAILABLE",
        )

    @staticmethod
    def _translate(exc: grpc.aio.AioRpcError) -> errors.ServiceError:
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            return errors.InvalidArgument(
                f"the alert server rejected the package: {exc.details()}",
                reason="PLUGIN_LOAD_FAILED",
            )
        if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return errors.FailedPrecondition(
                f"the alert server refused this API server ({exc.code().name}: "
                f"{exc.details()}): check internal_token and the TLS settings on both",
                reason="ALERT_AUTH_FAILED",
            )
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
            return errors.FailedPrecondition(exc.details() or "", reason="PLUGIN_LOAD_FAILED")
        return errors.Internal(
            f"alert server error: {exc.code().name}: {exc.details()}", reason="ALERT_ERROR"
        )

    async def _each(
        self,
        call: Callable[[plugin_host_pb2_grpc.PluginHostServiceStub], Awaitable[Any]],
        only: Sequence[tuple[str, _Member]] | None = None,
    ) -> list[BaseException | None]:
        async def one(target: str, member: _Member) -> BaseException | None:
            try:
                await call(member.stub)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _UNREACHABLE:
                    return self._translate(exc)
                member.reach.failed(exc.details())
                return errors.Unavailable(f"alert server {target} unreachable")
            member.reach.succeeded()
            return None

        members = list(self._members.items()) if only is None else list(only)
        if len(members) == 1:  # the usual case, without gather's extra task and loop pass
            return [await one(*members[0])]
        return list(await asyncio.gather(*(one(t, m) for t, m in members)))

    async def activate_plugin(self, plugin_id: str, sha256: str, isolation: str = "") -> None:
        """Loads (or hot-swaps to) the stored package in the given isolation mode; a
        rejection is the admin's error."""
        request = pb.LoadPluginRequest(plugin_id=plugin_id, sha256=sha256, isolation=isolation)
        results = await self._each(lambda s: s.LoadPlugin(request, timeout=self.timeout))
        for result in results:
            if isinstance(result, errors.ServiceError) and not isinstance(
                result, errors.Unavailable
            ):
                raise result  # an unreachable one reconciles when it is back

    async def unload_plugin(self, plugin_id: str) -> None:
        request = pb.UnloadPluginRequest(plugin_id=plugin_id)
        await self._each(lambda s: s.UnloadPlugin(request, timeout=self.timeout))

    async def apply_instance(self, instance_id: str) -> None:
        request = pb.ApplyInstanceRequest(instance_id=instance_id)
        for result in await self._each(lambda s: s.ApplyInstance(request, timeout=self.timeout)):
            if result is not None and not isinstance(result, errors.Unavailable):
                log.warning("alert server could not apply instance %s: %s", instance_id, result)

    async def remove_instance(self, instance_id: str) -> None:
        request = pb.RemoveInstanceRequest(instance_id=instance_id)
        await self._each(lambda s: s.RemoveInstance(request, timeout=self.timeout))

    def notify(self, max_sequence: int) -> None:
        """Tells every alert server that events up to ``max_sequence`` are committed.

        Never blocks the publisher. Each alert server hears it as a message on its open
        ``NotifyStream`` (``NudgeStream``: coalesced while a write is in progress). Where
        that stream is closed (broken, or an older alert server), a unary Notify goes out at
        once while fewer than ``NOTIFIES_IN_FLIGHT`` rounds are unanswered; past that, the
        newest sequence waits for the first answer, so a burst of commits coalesces without
        each commit waiting a whole round trip behind the previous one (Notify only raises a
        maximum, so the alert server takes them in any order).
        """
        if max_sequence <= self._notify_seq:
            return
        self._notify_seq = max_sequence
        if len(self._notifies) < NOTIFIES_IN_FLIGHT:
            self._send_notify()
        else:  # the streams need no slot; the others hear it when a round ends
            for member in self._members.values():
                member.nudges.send(max_sequence)

    @property
    def notifies_in_flight(self) -> int:
        return len(self._notifies)

    def _send_notify(self) -> None:
        sent = self._notify_sent = self._notify_seq
        unary = [(t, m) for t, m in self._members.items() if not m.nudges.send(sent)]
        if unary:
            self._notify_round(sent, unary)

    def _notify_round(self, sent: int, members: list[tuple[str, _Member]]) -> None:
        stage_trace.mark_upto("notify_sent", sent)
        request = pb.NotifyRequest(max_sequence=sent)
        task = asyncio.create_task(self._each(partial(_notify, request), members))
        self._notifies.add(task)
        task.add_done_callback(self._notified)

    def _fall_back(self, target: str) -> None:
        """``target``'s stream ended: the newest sequence goes to it by Notify, since the
        messages written last on that stream may not have been read."""
        member = self._members.get(target)
        if member is not None and self._notify_seq:
            self._notify_round(self._notify_seq, [(target, member)])

    def _notified(self, task: asyncio.Task[Any]) -> None:
        self._notifies.discard(task)
        if not task.cancelled() and self._notify_seq > self._notify_sent:
            self._send_notify()  # what was committed while every slot was busy

    async def kick(self, instance_id: str) -> None:
        """Has the instance's runner re-read its state now (best effort: the lease loop
        notices the change within a third of the lease time anyway)."""
        request = pb.KickInstanceRequest(instance_id=instance_id)
        await self._each(lambda s: s.KickInstance(request, timeout=self.timeout))

    async def send_test(self, instance_id: str, event: bytes) -> pb.SendTestEventResponse:
        request = pb.SendTestEventRequest(instance_id=instance_id, event=event)
        for target, member in await self._live():
            try:
                reply = await member.stub.SendTestEvent(request, timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _UNREACHABLE:
                    member.reach.failed(exc.details())
                else:
                    log.warning("alert server %s: SendTestEvent failed: %s", target, exc.details())
                continue
            member.reach.succeeded()
            if reply.running:
                return reply  # type: ignore[no-any-return]
        raise errors.FailedPrecondition(
            f"no reachable alert server runs {names.instance_name(instance_id)} right now",
            reason="INSTANCE_NOT_RUNNING",
        )
