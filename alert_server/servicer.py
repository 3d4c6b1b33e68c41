"""listener.alert.v1.PluginHostService: the API server's handle on this alert server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC
from typing import Any

from google.protobuf import struct_pb2

from alert_server.host import PluginHost
from alert_server.loader import LoadedPackage
from alert_server.package_cache import sha256_of
from alert_server.wakeup import SequenceSignal
from event_store import errors as store_errors
from event_store.events import StoredEvent
from listener.alert.v1 import plugin_host_pb2 as pb
from listener.alert.v1 import plugin_host_pb2_grpc
from listener.v1 import event_pb2
from listener_core import errors, stage_trace
from listener_core.server import Context


def _nothing() -> None:
    pass


def store_refusal(exc: BaseException) -> errors.ServiceError | None:
    """The store's "no such row" as NOT_FOUND (the alert server's error stage's refusals)."""
    if isinstance(exc, store_errors.NotInStore):
        reason = {"plugin": "PLUGIN_NOT_FOUND", "listener instance": "INSTANCE_NOT_FOUND"}
        return errors.NotFound(str(exc), reason=reason.get(exc.kind, "NOT_FOUND"))
    return None


def _load_response(loaded: LoadedPackage) -> pb.LoadPluginResponse:
    manifest = loaded.info.manifest
    forms = []
    for item in loaded.form:
        s = struct_pb2.Struct()
        s.update(item)
        forms.append(s)
    return pb.LoadPluginResponse(
        name=manifest.name,
        version=str(manifest.version),
        entry=manifest.entry,
        sdk=str(manifest.sdk),
        isolation=loaded.isolation,
        params=forms,
    )


class PluginHostServicer(plugin_host_pb2_grpc.PluginHostServiceServicer):
    """Talks to the host's operations and the wake-up signal, nothing inside them."""

    def __init__(
        self, host: PluginHost, signal: SequenceSignal, nudged: Callable[[], None] = _nothing
    ) -> None:
        """``nudged`` counts each message of a NotifyStream (a unary Notify is counted as a
        call by the pipeline)."""
        self.host = host
        self.signal = signal
        self.nudged = nudged
        self._streams: set[asyncio.Task[Any]] = set()  # the NotifyStream calls being served
        self._ending = False

    async def LoadPlugin(
        self, request: pb.LoadPluginRequest, context: Context
    ) -> pb.LoadPluginResponse:
        if not request.plugin_id or not request.sha256:
            raise errors.InvalidArgument("plugin_id and sha256 are required")
        if request.dry_run:
            if not request.package:
                raise errors.InvalidArgument("a dry run needs the package bytes")
            if sha256_of(request.package) != request.sha256:
                raise errors.InvalidArgument("package bytes do not match sha256")
            return _load_response(
                await self.host.probe(
                    request.plugin_id, request.package, request.sha256, request.isolation or None
                )
            )
        return _load_response(
            await self.host.load_plugin(
                request.plugin_id, request.sha256, request.isolation or None, request.package
            )
        )

    async def UnloadPlugin(
        self, request: pb.UnloadPluginRequest, context: Context
    ) -> pb.UnloadPluginResponse:
        await self.host.unload_plugin(request.plugin_id)
        return pb.UnloadPluginResponse()

    async def ApplyInstance(
        self, request: pb.ApplyInstanceRequest, context: Context
    ) -> pb.ApplyInstanceResponse:
        await self.host.apply_instance(request.instance_id)
        return pb.ApplyInstanceResponse()

    async def RemoveInstance(
        self, request: pb.RemoveInstanceRequest, context: Context
    ) -> pb.RemoveInstanceResponse:
        await self.host.remove_instance(request.instance_id)
        return pb.RemoveInstanceResponse()

    async def Notify(self, request: pb.NotifyRequest, context: Context) -> pb.NotifyResponse:
        stage_trace.mark_upto("notify_received", request.max_sequence)
        self.signal.bump(request.max_sequence)
        return pb.NotifyResponse()

    async def NotifyStream(
        self, requests: AsyncIterator[pb.NotifyRequest], context: Context
    ) -> pb.NotifyResponse:
        """Each message as one Notify call; ends when the API server closes the stream, or
        at ``end_streams`` (shutdown)."""
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        try:
            async for request in requests:
                stage_trace.mark_upto("notify_received", request.max_sequence)
                self.signal.bump(request.max_sequence)
                self.nudged()
        except asyncio.CancelledError:
            if not self._ending:
                raise  # the caller went away
            task.uncancel()  # ended by end_streams: answered, so the call closes now
        finally:
            self._streams.discard(task)
        return pb.NotifyResponse()

    def end_streams(self) -> None:
        """Answers the open NotifyStream calls (a stopping server's grace would otherwise
        wait for them: they never end on their own). Their API servers nudge by Notify until
        they reopen the stream, on this server's successor."""
        self._ending = True
        for task in list(self._streams):
            task.cancel()

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: Context
    ) -> pb.GetStatusResponse:
        latest = self.signal.latest
        status = self.host.status()
        return pb.GetStatusResponse(
            plugins=[
                pb.LoadedPlugin(
                    plugin_id=p.plugin_id,
                    sha256=p.sha256,
                    version=p.version,
                    module_prefix=p.prefix,
                    isolation=p.isolation,
                )
                for p in status.plugins
            ],
            leaked_plugins=[
                pb.LeakedPlugin(
                    plugin_id=leak.plugin_id,
                    sha256=leak.sha256,
                    version=leak.version,
                    module_prefix=leak.prefix,
                    leaks=leak.leaks,
                )
                for leak in status.leaks
            ],
            instances=[
                pb.InstanceStatus(
                    instance_id=v.instance_id,
                    plugin_id=v.plugin_id,
                    state=v.state,
                    delivered_sequence=v.cursor,
                    lag=max(0, latest - v.cursor),
                    last_error=v.last_error,
                    attempts=v.attempts,
                )
                for v in status.instances
            ],
        )

    async def KickInstance(
        self, request: pb.KickInstanceRequest, context: Context
    ) -> pb.KickInstanceResponse:
        return pb.KickInstanceResponse(running=self.host.kick(request.instance_id))

    async def SendTestEvent(
        self, request: pb.SendTestEventRequest, context: Context
    ) -> pb.SendTestEventResponse:
        msg = event_pb2.ListenerEvent.FromString(request.event)
        stored = StoredEvent(
            msg.sequence, msg.id, int(msg.type), msg.publish_time.ToDatetime(UTC), request.event
        )
        started = time.monotonic()
        error = await self.host.send_test_event(request.instance_id, stored)
        if error is None:
            return pb.SendTestEventResponse(running=False)
        return pb.SendTestEventResponse(
            running=True, error=error, duration_ms=(time.monotonic() - started) * 1000
        )
