"""The child process of a process-isolated plugin: ``python -m alert_server.plugin_child``.

It loads the package with the alert server's own loader (same namespaces, same checks), makes
one plugin object, and serves the framed protocol of ``alert_server.plugin_protocol`` on its
stdin/stdout, one request at a time, until its stdin ends. A segfault, ``os._exit`` or a
runaway allocation in plugin code ends only this process; the host sees the pipe close,
fails the call, and starts a new child later.

Safety measures, each for a reason:

* The protocol uses private duplicates of fds 0 and 1, and fd 1 is then pointed at stderr:
  a plugin's ``print`` must not corrupt the frames, and its output belongs in the host log
  (the host logs this process's stderr line by line).
* Resource limits (``--memory-mb`` → RLIMIT_AS, ``--max-files`` → RLIMIT_NOFILE) are set by
  the child itself before any plugin code runs, rather than by a ``preexec_fn`` in the host,
  which is unsafe in a threaded server.
* The sandbox (``alert_server.sandbox``): the host starts it with a scrubbed environment
  (and, if configured, as another user); with ``--sandbox`` the child, once it has read its
  package into a private directory, confines its own reads with Landlock before the plugin's
  code is imported.
* It exits when the host dies: end of stdin (the kernel closes the host's end of the pipe),
  and, in case some other process holds that end, a watchdog thread that notices the parent
  pid changed. SIGINT is ignored: a terminal's Ctrl-C is for the host, which closes children
  itself.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alert_server import sandbox
from alert_server.errors import ProtocolError
from alert_server.plugin_protocol import (
    PROTOCOL_VERSION,
    encode,
    error_to_wire,
    read_frame,
)
from listener_core import logs


def _take_stdio() -> tuple[int, int]:
    """Private protocol fds; fd 0 becomes /dev/null and fd 1 a copy of stderr."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return proto_in, proto_out


def _set_limit(kind: int, wanted: int) -> None:
    _, hard = resource.getrlimit(kind)
    value = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(kind, (value, value))


def apply_limits(memory_mb: int, max_files: int) -> None:
    if memory_mb > 0:
        _set_limit(resource.RLIMIT_AS, memory_mb * 2**20)
    if max_files > 0:
        _set_limit(resource.RLIMIT_NOFILE, max_files)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Session:
    """The package and the one plugin object this child serves."""

    def __init__(self, sandbox: bool = False, read_paths: Sequence[str] = ()) -> None:
        self.plugin_class: Any = None
        self.plugin: Any = None
        self.sandbox = sandbox
        self.read_paths = list(read_paths)
        self.private_dir: str | None = None

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        if op == "hello":
            if message.get("protocol") != PROTOCOL_VERSION:
                raise ProtocolError(
                    f"protocol {message.get('protocol')!r} not supported; "
                    f"this child speaks {PROTOCOL_VERSION}"
                )
            return {"protocol": PROTOCOL_VERSION, "pid": os.getpid()}
        if op == "load":
            return self._load(message)
        from listener_common import events
        from listener_common.plugin import deliver_batch

        if op == "open":
            if self.plugin_class is None:
                raise ProtocolError("open before load")
            plugin = self.plugin_class()
            await plugin.open(dict(message.get("config") or {}))
            self.plugin = plugin
            return {}
        if self.plugin is None:
            raise ProtocolError(f"{op!r} before open")
        if op == "event":
            await self.plugin.on_event(events.from_dict(message["event"]))
        elif op == "events":
            await deliver_batch(self.plugin, [events.from_dict(e) for e in message["events"]])
        elif op == "close":
            plugin, self.plugin = self.plugin, None
            await plugin.close()
        else:
            raise ProtocolError(f"unknown op {op!r}")
        return {}

    def _load(self, message: dict[str, Any]) -> dict[str, Any]:
        from alert_server.loader import PackageLoader
        from listener_common.package import inspect_package
        from listener_common.plugin import supports_batch

        path = Path(str(message["zip_path"]))
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != message.get("sha256"):
            raise ProtocolError(f"{path} does not have sha256 {message.get('sha256')}")
        info = inspect_package(data)
        if self.sandbox:
            # A private copy, then no more reads outside the allowed paths: the host's
            # package cache lies in its data directory, which the plugin must not read.
            self.private_dir = tempfile.mkdtemp(prefix="listener-plugin-")
            path = Path(self.private_dir) / "package.zip"
            path.write_bytes(data)
            if not sandbox.confine_reads([*sandbox.read_paths(self.read_paths), self.private_dir]):
                print(
                    "plugin child: no Landlock on this kernel; reads are not confined",
                    file=sys.stderr,
                )
        loaded = PackageLoader().load(str(message["plugin_id"]), info, path, isolation="namespace")
        self.plugin_class = loaded.plugin_class
        return {"form": loaded.form, "batch": supports_batch(loaded.plugin_class)}


async def serve(proto_in: int, proto_out: int, session: _Session) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(proto_in, "rb", buffering=0)
    )
    while True:
        try:
            message = await read_frame(reader)
        except ProtocolError as exc:
            print(f"plugin child: bad frame from the host: {exc}", file=sys.stderr)
            return
        if message is None:
            return  # the host closed our stdin, or died
        reply: dict[str, Any] = {"id": message.get("id")}
        try:
            reply.update(await session.handle(message), ok=True)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            reply.update(ok=False, error=error_to_wire(exc))
        _write_all(proto_out, encode(reply))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alert_server.plugin_child")
    parser.add_argument("--memory-mb", type=int, default=0, help="RLIMIT_AS in MiB (0: none)")
    parser.add_argument("--max-files", type=int, default=0, help="RLIMIT_NOFILE (0: inherit)")
    parser.add_argument("--sandbox", action="store_true", help="confine reads (Landlock)")
    parser.add_argument("--read-path", action="append", default=[], help="also readable")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The host logs this process's stderr: the same redaction and quiet libraries as its own.
    logging.basicConfig(level=logging.WARNING, handlers=[logs.handler("text")])
    logs.quiet_libraries()
    proto_in, proto_out = _take_stdio()
    apply_limits(args.memory_mb, args.max_files)
    threading.Thread(
        target=_watch_parent, args=(os.getppid(),), name="parent-watch", daemon=True
    ).start()
    session = _Session(args.sandbox, args.read_path)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(serve(proto_in, proto_out, session))
    finally:
        if session.private_dir is not None:
            shutil.rmtree(session.private_dir, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # No asyncio.run: its shutdown would wait for worker threads a plugin left hanging, and
    # the host is done with this process.
    os._exit(0)


if __name__ == "__main__":
    main()
