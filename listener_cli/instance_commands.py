"""listenerctl instance and parked: configure listener instances and steer their delivery."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from listener_cli import render
from listener_cli.commands import CommandError, Handler, connected, event_types_arg, show
from listener_client import ListenerClient, event_type, type_name
from listener_common.params import parse_assignments


async def create_instance(client: ListenerClient | None, args: argparse.Namespace) -> int:
    types = event_types_arg(args.events)
    if not types:
        raise CommandError("--events is required: " + "the event types the instance takes", 2)
    inst = await connected(client).create_instance(
        args.id,
        args.plugin,
        event_types=types,
        params=parse_assignments(args.param),
        display_name=args.display_name or "",
        park_after=args.park_after,
        filter=args.filter or "",
    )
    return show(args, inst, render.instance, f"created {inst.name}")


async def update_instance(client: ListenerClient | None, args: argparse.Namespace) -> int:
    c = connected(client)
    given = parse_assignments(args.param)
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
        event_types=event_types_arg(args.events),
        display_name=args.display_name,
        park_after=args.park_after,
        block=args.block,
        filter=args.filter,
        etag=etag,
    )
    return show(args, inst, render.instance, f"updated {inst.name}")


async def delete_instance(client: ListenerClient | None, args: argparse.Namespace) -> int:
    await connected(client).delete_instance(args.id, etag=args.etag)
    name = args.id if "/" in args.id else f"listenerInstances/{args.id}"
    return show(args, {"deleted": name}, said=f"deleted {name}")


async def list_instances(client: ListenerClient | None, args: argparse.Namespace) -> int:
    found = await connected(client).list_instances()
    return show(args, found, render.instances)


async def status(client: ListenerClient | None, args: argparse.Namespace) -> int:
    return show(args, await connected(client).get_instance(args.id), render.instance)


def action(name: str) -> Handler:
    """retry, skip, pause or resume."""

    async def handler(client: ListenerClient | None, args: argparse.Namespace) -> int:
        c = connected(client)
        method = {"retry": c.retry, "skip": c.skip, "pause": c.pause, "resume": c.resume}[name]
        inst = await method(args.id)
        past = {"retry": "retrying", "skip": "skipped the head event of", "pause": "paused"}
        return show(args, inst, render.instance, f"{past.get(name, 'resumed')} {inst.name}")

    return handler


def parse_time(text: str) -> datetime:
    """ISO 8601, ``Z`` allowed; a time without a zone is UTC."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--from-time {text!r} is not an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def replay(client: ListenerClient | None, args: argparse.Namespace) -> int:
    inst = await connected(client).replay(
        args.id,
        from_sequence=args.from_sequence,
        from_time=parse_time(args.from_time) if args.from_time else None,
    )
    start = f"sequence {args.from_sequence}" if args.from_sequence is not None else args.from_time
    return show(args, inst, render.instance, f"replaying {inst.name} from {start}")


async def test_event(client: ListenerClient | None, args: argparse.Namespace) -> int:
    reply = await connected(client).send_test(args.id, args.event)
    if args.json:
        render.emit_json(reply)
    elif reply.delivered:
        print(f"delivered a test {type_name(event_type(args.event))} in {reply.duration_ms:.1f} ms")
    else:
        print(f"the plugin failed the test event: {reply.error}")
    return 0 if reply.delivered else 1


async def list_parked(client: ListenerClient | None, args: argparse.Namespace) -> int:
    found = await connected(client).list_parked(args.id)
    return show(args, found, render.parked)


async def redeliver(client: ListenerClient | None, args: argparse.Namespace) -> int:
    count = await connected(client).redeliver(args.id, args.sequences)
    return show(args, {"count": count}, said=f"{count} parked event(s) queued for redelivery")
