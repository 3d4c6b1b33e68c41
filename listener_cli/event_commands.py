"""listenerctl event, tail and health: publish and list events, follow deliveries, probe a
server."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from listener.v1 import event_pb2
from listener_cli import render
from listener_cli.commands import connected, event_types_arg, show
from listener_client import ListenerClient, event_type, to_event, type_name


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
    c = connected(client)
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
    found = await connected(client).list_events(
        after_sequence=args.after, event_types=event_types_arg(args.events) or (), limit=args.limit
    )
    return show(args, found, render.events)


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
    c = connected(client)
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
    # An instance starts at the log's end: the events stored before it was created never
    # reached it, though its cursor is past them. They are not shown as delivered, unless a
    # replay seen here moves the cursor back over them.
    created = inst.create_time.ToNanoseconds()
    replayed = False
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
            replayed = True
        while printed < d.delivered_sequence and not lines.done:
            batch = await c.list_events(after_sequence=printed, event_types=types, limit=500)
            batch = [e for e in batch if e.sequence <= d.delivered_sequence]
            for event in batch:
                if replayed or event.publish_time.ToNanoseconds() >= created:
                    lines.emit(*_event_line(event, "delivered"))
            printed = batch[-1].sequence if batch else d.delivered_sequence
        if lines.done:
            break
        await asyncio.sleep(args.interval)
        inst = await c.get_instance(args.id)
    return 0


async def health(client: ListenerClient | None, args: argparse.Namespace) -> int:
    serving = await connected(client).health(args.service)
    if args.json:
        render.emit_json({"server": args.server, "serving": serving})
    else:
        print(f"{args.server}: {'SERVING' if serving else 'NOT_SERVING'}")
    return 0 if serving else 6
