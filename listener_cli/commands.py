"""What each listenerctl command does, over :class:`listener_client.ListenerClient`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from listener.v1 import event_pb2, listener_instance_pb2
from listener_cli import render
from listener_client import ListenerClient, event_type, to_event, type_name
from listener_client.values import Package
from listener_common.errors import PackageError
from listener_common.package import build_package, inspect_package
from listener_common.params import parse_assignments
from listener_common.scaffold import new_project
from listener_common.testing import __main__ as plugin_test

Handler = Callable[[ListenerClient | None, argparse.Namespace], Awaitable[int]]


class CommandError(Exception):
    """A failure found on this side, with the exit code it maps to."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


async def run(args: argparse.Namespace) -> int:
    handler: Handler = args.handler
    if handler in (build, new, test):  # need no server
        return await handler(None, args)
    async with ListenerClient(
        args.server,
        token=args.token,
        tls=args.tls,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_server_name=args.tls_server_name,
        timeout=args.timeout,
    ) as client:
        return await handler(client, args)


def _client(client: ListenerClient | None) -> ListenerClient:
    assert client is not None
    return client


def _types(text: str | None) -> list[int] | None:
    if text is None:
        return None
    return [event_type(t) for t in text.split(",") if t.strip()]


def _params(items: list[str]) -> dict[str, str]:
    return parse_assignments(items)


def _package(path_text: str, tmp: Path) -> tuple[Path, Package]:
    """A zip path as it is, a folder built into ``tmp`` first."""
    path = Path(path_text)
    if path.is_dir():
        try:
            built = build_package(path, tmp)
        except PackageError as exc:
            raise ValueError(str(exc)) from None
        return built, built
    if not path.is_file():
        raise ValueError(f"{path}: no such package file or plugin folder")
    return path, path


def _progress(args: argparse.Namespace, label: str) -> render.ProgressBar | None:
    return None if args.no_progress else render.ProgressBar(label)


# -- plugins ----------------------------------------------------------------------------


async def build(client: ListenerClient | None, args: argparse.Namespace) -> int:
    try:
        path = build_package(Path(args.folder), Path(args.out))
        info = inspect_package(path.read_bytes())
    except PackageError as exc:
        raise ValueError(str(exc)) from None
    if args.json:
        render.emit_json(
            {
                "path": str(path),
                "name": info.manifest.name,
                "version": str(info.manifest.version),
                "sha256": info.sha256,
                "size": info.size,
            }
        )
    else:
        print(f"{path}  {render.size(info.size)}  sha256 {info.sha256}")
    return 0


async def new(client: ListenerClient | None, args: argparse.Namespace) -> int:
    root = new_project(args.name, Path(args.dir))  # ValueError: the name rule, exit 4
    print(f"wrote {root}: test it with 'listenerctl plugin test {root} --param outFile=...'")
    return 0


async def test(client: ListenerClient | None, args: argparse.Namespace) -> int:
    # The harness runs its own event loop: give it a thread rather than nest loops.
    return await asyncio.to_thread(plugin_test.run, args, as_json=args.json)


async def install(client: ListenerClient | None, args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path, package = _package(args.package, Path(tmp))
        plugin = await _client(client).install_plugin(
            package,
            plugin_id=args.id,
            display_name=args.display_name or "",
            isolation=args.isolation,
            progress=_progress(args, f"uploading {path.name}"),
            stream_threshold=0 if args.stream else 1 << 20,
            chunk_size=args.chunk_size,
        )
    if args.json:
        render.emit_json(plugin)
    else:
        print(f"installed {plugin.name} {plugin.version}")
        render.plugin(plugin)
    return 0


async def update(client: ListenerClient | None, args: argparse.Namespace) -> int:
    if args.package is None and args.display_name is None and args.isolation is None:
        raise CommandError("nothing to update: give a package, --display-name or --isolation", 2)
    with tempfile.TemporaryDirectory() as tmp:
        path, package = (None, None) if args.package is None else _package(args.package, Path(tmp))
        plugin = await _client(client).update_plugin(
            args.id,
            package,
            display_name=args.display_name,
            isolation=args.isolation,
            etag=args.etag,
            progress=_progress(args, f"uploading {path.name}") if path else None,
            stream_threshold=0 if args.stream else 1 << 20,
            chunk_size=args.chunk_size,
        )
    if args.json:
        render.emit_json(plugin)
    else:
        print(f"updated {plugin.name} to {plugin.version}")
        render.plugin(plugin)
    return 0


async def uninstall(client: ListenerClient | None, args: argparse.Namespace) -> int:
    await _client(client).uninstall_plugin(args.id, etag=args.etag)
    name = args.id if args.id.startswith("plugins/") else f"plugins/{args.id}"
    if args.json:
        render.emit_json({"deleted": name})
    else:
        print(f"uninstalled {name}")
    return 0


async def list_plugins(client: ListenerClient | None, args: argparse.Namespace) -> int:
    found = await _client(client).list_plugins()
    if args.json:
        render.emit_json(found)
    else:
        render.plugins(found)
    return 0


async def get_plugin(client: ListenerClient | None, args: argparse.Namespace) -> int:
    plugin = await _client(client).get_plugin(args.id)
    if args.json:
        render.emit_json(plugin)
    else:
        render.plugin(plugin)
    return 0


# -- instances --------------------------------------------------------------------------


def _show(inst: listener_instance_pb2.ListenerInstance, args: argparse.Namespace, done: str) -> int:
    if args.json:
        render.emit_json(inst)
    else:
        if done:
            print(done)
        render.instance(inst)
    return 0


async def create_instance(client: ListenerClient | None, args: argparse.Namespace) -> int:
    types = _types(args.events)
    if not types:
        raise CommandError("--events is required: " + "the event types the instance takes", 2)
    inst = await _client(client).create_instance(
        args.id,
        args.plugin,
        event_types=types,
        params=_params(args.param),
        display_name=args.display_name or "",
        park_after=args.park_after,
        filter=args.filter or "",
    )
    return _show(inst, args, f"created {inst.name}")


async def update_instance(client: ListenerClient | None, args: argparse.Namespace) -> int:
    c = _client(client)
    given = _params(args.param)
    params: dict[str, str] | None = None
    etag = args.etag
    if given or args.unset:
        if args.replace_params:
            params = given
        else:
            # Merge into the current map; secrets come back masked, and a masked value sent
            # back keeps the stored secret.
            current = await c.get_instance(args.id)
            params = {**current.params, **given}
            etag = etag or current.etag
        for key in args.unset:
            params.pop(key, None)
    inst = await c.update_instance(
        args.id,
        params=params,
        event_types=_types(args.events),
        display_name=args.display_name,
        park_after=args.park_after,
        block=args.block,
        filter=args.filter,
        etag=etag,
    )
    return _show(inst, args, f"updated {inst.name}")


async def delete_instance(client: ListenerClient | None, args: argparse.Namespace) -> int:
    await _client(client).delete_instance(args.id, etag=args.etag)
    name = args.id if "/" in args.id else f"listenerInstances/{args.id}"
    if args.json:
        render.emit_json({"deleted": name})
    else:
        print(f"deleted {name}")
    return 0


async def list_instances(client: ListenerClient | None, args: argparse.Namespace) -> int:
    found = await _client(client).list_instances()
    if args.json:
        render.emit_json(found)
    else:
        render.instances(found)
    return 0


async def status(client: ListenerClient | None, args: argparse.Namespace) -> int:
    return _show(await _client(client).get_instance(args.id), args, "")


def action(name: str) -> Handler:
    """retry, skip, pause or resume."""

    async def handler(client: ListenerClient | None, args: argparse.Namespace) -> int:
        c = _client(client)
        method = {"retry": c.retry, "skip": c.skip, "pause": c.pause, "resume": c.resume}[name]
        inst = await method(args.id)
        past = {"retry": "retrying", "skip": "skipped the head event of", "pause": "paused"}
        return _show(inst, args, f"{past.get(name, 'resumed')} {inst.name}")

    return handler


def parse_time(text: str) -> datetime:
    """ISO 8601, ``Z`` allowed; a time without a zone is UTC."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--from-time {text!r} is not an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def replay(client: ListenerClient | None, args: argparse.Namespace) -> int:
    inst = await _client(client).replay(
        args.id,
        from_sequence=args.from_sequence,
        from_time=parse_time(args.from_time) if args.from_time else None,
    )
    start = f"sequence {args.from_sequence}" if args.from_sequence is not None else args.from_time
    return _show(inst, args, f"replaying {inst.name} from {start}")


async def test_event(client: ListenerClient | None, args: argparse.Namespace) -> int:
    reply = await _client(client).send_test(args.id, args.event)
    if args.json:
        render.emit_json(reply)
    elif reply.delivered:
        print(f"delivered a test {type_name(event_type(args.event))} in {reply.duration_ms:.1f} ms")
    else:
        print(f"the plugin failed the test event: {reply.error}")
    return 0 if reply.delivered else 1


async def list_parked(client: ListenerClient | None, args: argparse.Namespace) -> int:
    found = await _client(client).list_parked(args.id)
    if args.json:
        render.emit_json(found)
    else:
        render.parked(found)
    return 0


async def redeliver(client: ListenerClient | None, args: argparse.Namespace) -> int:
    count = await _client(client).redeliver(args.id, args.sequences)
    if args.json:
        render.emit_json({"count": count})
    else:
        print(f"{count} parked event(s) queued for redelivery")
    return 0


# -- events -----------------------------------------------------------------------------


def read_events(text: str) -> tuple[list[event_pb2.ListenerEvent], bool]:
    """The events in a publish document, and whether it is a batch."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"the events are not valid JSON ({exc}); expected one event "
            '({"task_fail": {...}}), {"event": {...}}, a list of events, or {"events": [...]}'
        ) from None
    if isinstance(data, dict) and "events" in data:
        data = data["events"]
    elif isinstance(data, dict) and "event" in data:
        data = data["event"]
    if isinstance(data, list):
        if not data:
            raise ValueError("the event list is empty")
        return [to_event(e) for e in data], True
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object (an event) or a list of events")
    return [to_event(data)], False


async def publish(client: ListenerClient | None, args: argparse.Namespace) -> int:
    text = await asyncio.to_thread(
        sys.stdin.read if args.file == "-" else Path(args.file).read_text
    )
    found, batch = read_events(text)
    c = _client(client)
    if batch:
        replies = await c.publish_batch(found, request_id=args.request_id)
    else:
        replies = [await c.publish(found[0], request_id=args.request_id)]
    if args.json:
        render.emit_json(replies if batch else replies[0])
    else:
        render.table(
            ["SEQUENCE", "TYPE", "ID"],
            (
                [r.sequence, type_name(e.type or event_type(e.WhichOneof("payload") or "")), r.id]
                for r, e in zip(replies, found, strict=True)
            ),
        )
    return 0


async def list_events(client: ListenerClient | None, args: argparse.Namespace) -> int:
    found = await _client(client).list_events(
        after_sequence=args.after, event_types=_types(args.events) or (), limit=args.limit
    )
    if args.json:
        render.emit_json(found)
    else:
        render.events(found)
    return 0


# -- tail -------------------------------------------------------------------------------


async def log_end(client: ListenerClient) -> int:
    """The newest stored sequence, found with a few one-event ListEvents probes (galloping,
    then bisecting), so it costs about 2·log2(sequence) tiny calls instead of a full scan."""

    async def exists_after(seq: int) -> bool:
        return bool(await client.list_events(after_sequence=seq, limit=1))

    if not await exists_after(0):
        return 0
    low, high = 0, 1  # an event exists after low; find a high with none after it
    while await exists_after(high):
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        if await exists_after(mid):
            low = mid
        else:
            high = mid
    return high


class _Lines:
    """Prints tail lines and counts them against ``--count``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = bool(args.json)
        self.left: int | None = args.count

    @property
    def done(self) -> bool:
        return self.left is not None and self.left <= 0

    def emit(self, data: dict[str, Any], text: str) -> None:
        if self.done:
            return
        if self.json:
            render.emit_json_line(data)
        else:
            print(text, flush=True)
        if self.left is not None:
            self.left -= 1


def _event_line(event: event_pb2.ListenerEvent, status: str) -> tuple[dict[str, Any], str]:
    data = {
        "status": status,
        "sequence": event.sequence,
        "type": type_name(event.type),
        "id": event.id,
        "publish_time": render.when(event.publish_time),
    }
    text = (
        f"{render.when(event.publish_time)}  {status.upper():<9}  seq {event.sequence:<6} "
        f"{type_name(event.type):<16} {event.id}  {render.payload_summary(event)}"
    )
    return data, text.rstrip()


async def tail(client: ListenerClient | None, args: argparse.Namespace) -> int:
    c = _client(client)
    lines = _Lines(args)
    if args.id is None:
        after = args.from_sequence if args.from_sequence is not None else await log_end(c)
        while not lines.done:
            for event in await c.list_events(after_sequence=after, limit=500):
                lines.emit(*_event_line(event, "published"))
                after = event.sequence
            if not lines.done:
                await asyncio.sleep(args.interval)
        return 0
    inst = await c.get_instance(args.id)
    types = list(inst.event_types)
    printed = (
        args.from_sequence if args.from_sequence is not None else inst.delivery.delivered_sequence
    )
    seen = {
        (a.time.seconds, a.time.nanos, a.sequence, a.count) for a in inst.delivery.recent_attempts
    }
    while not lines.done:
        d = inst.delivery
        for a in reversed(d.recent_attempts):  # oldest first
            key = (a.time.seconds, a.time.nanos, a.sequence, a.count)
            if key in seen:
                continue
            seen.add(key)
            if a.error:
                lines.emit(
                    {
                        "status": "failed",
                        "time": render.when(a.time),
                        "sequence": a.sequence,
                        "event_id": a.event_id,
                        "attempt": a.count,
                        "error": a.error,
                    },
                    f"{render.when(a.time)}  FAILED     seq {a.sequence:<6} attempt {a.count}  "
                    f"{a.event_id}  {a.error}",
                )
        if d.delivered_sequence < printed:  # replayed: show the redeliveries again
            printed = d.delivered_sequence
        while printed < d.delivered_sequence and not lines.done:
            batch = await c.list_events(after_sequence=printed, event_types=types, limit=500)
            batch = [e for e in batch if e.sequence <= d.delivered_sequence]
            for event in batch:
                lines.emit(*_event_line(event, "delivered"))
            printed = batch[-1].sequence if batch else d.delivered_sequence
        if lines.done:
            break
        await asyncio.sleep(args.interval)
        inst = await c.get_instance(args.id)
    return 0


async def health(client: ListenerClient | None, args: argparse.Namespace) -> int:
    serving = await _client(client).health(args.service)
    if args.json:
        render.emit_json({"server": args.server, "serving": serving})
    else:
        print(f"{args.server}: {'SERVING' if serving else 'NOT_SERVING'}")
    return 0 if serving else 6
