"""What each listenerctl command does, over :class:`listener_client.ListenerClient`: running a
command, what the commands share, and the plugin commands. The instance and parked-event
commands are in ``instance_commands``, the event, tail and health commands in
``event_commands``."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from listener_cli import render
from listener_client import ListenerClient, event_type
from listener_client.values import Package
from listener_common.errors import PackageError
from listener_common.package import build_package, inspect_package
from listener_common.scaffold import new_project
from listener_common.testing import __main__ as plugin_test

Handler = Callable[[ListenerClient | None, argparse.Namespace], Awaitable[int]]
T = TypeVar("T")


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


def connected(client: ListenerClient | None) -> ListenerClient:
    """The client of a command that needs a server (``run`` made one)."""
    assert client is not None
    return client


def show(
    args: argparse.Namespace,
    data: T,
    human: Callable[[T], object] | None = None,
    said: str = "",
) -> int:
    """A command's answer: ``data`` as JSON under ``--json``; else the line ``said`` (when
    given), then ``human(data)`` (when given). Exit code 0."""
    if args.json:
        render.emit_json(data)
    else:
        if said:
            print(said)
        if human is not None:
            human(data)
    return 0


def event_types_arg(text: str | None) -> list[int] | None:
    """``--events TASK_FAIL,WORKFLOW_END`` as EventType numbers (None when not given)."""
    if text is None:
        return None
    return [event_type(t) for t in text.split(",") if t.strip()]


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
        plugin = await connected(client).install_plugin(
            package,
            plugin_id=args.id,
            display_name=args.display_name or "",
            isolation=args.isolation,
            progress=_progress(args, f"uploading {path.name}"),
            stream_threshold=0 if args.stream else 1 << 20,
            chunk_size=args.chunk_size,
        )
    return show(args, plugin, render.plugin, f"installed {plugin.name} {plugin.version}")


async def update(client: ListenerClient | None, args: argparse.Namespace) -> int:
    if args.package is None and args.display_name is None and args.isolation is None:
        raise CommandError("nothing to update: give a package, --display-name or --isolation", 2)
    with tempfile.TemporaryDirectory() as tmp:
        path, package = (None, None) if args.package is None else _package(args.package, Path(tmp))
        plugin = await connected(client).update_plugin(
            args.id,
            package,
            display_name=args.display_name,
            isolation=args.isolation,
            etag=args.etag,
            progress=_progress(args, f"uploading {path.name}") if path else None,
            stream_threshold=0 if args.stream else 1 << 20,
            chunk_size=args.chunk_size,
        )
    return show(args, plugin, render.plugin, f"updated {plugin.name} to {plugin.version}")


async def uninstall(client: ListenerClient | None, args: argparse.Namespace) -> int:
    await connected(client).uninstall_plugin(args.id, etag=args.etag)
    name = args.id if args.id.startswith("plugins/") else f"plugins/{args.id}"
    return show(args, {"deleted": name}, said=f"uninstalled {name}")


async def list_plugins(client: ListenerClient | None, args: argparse.Namespace) -> int:
    found = await connected(client).list_plugins()
    return show(args, found, render.plugins)


async def get_plugin(client: ListenerClient | None, args: argparse.Namespace) -> int:
    return show(args, await connected(client).get_plugin(args.id), render.plugin)
