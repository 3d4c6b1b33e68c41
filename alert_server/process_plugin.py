"""The host side of process isolation: a ``ListenerPlugin`` proxy per plugin object, each
driving a child process (``alert_server.plugin_child``) that runs the real plugin.

Delivery loops and the plugin host treat a process-isolated package like any other: the
loader returns a ``LoadedPackage`` whose ``plugin_class`` is a class generated here, so
``plugin_class()``, ``open``, ``on_event``/``on_events`` and ``close`` work unchanged. Behind
them:

* ``open`` starts a child, checks the protocol version (handshake), has it load the package
  from the host's verified cache file, and opens the real plugin object with the instance's
  params. The child's stderr goes to this module's logger, line by line.
* Each call has a deadline (``ProcessSettings.call_timeout``, the alert server's
  ``handler_timeout``). A call that overruns it, or that the delivery loop gives up on, kills
  the child: unlike a thread, a process can be stopped, and its replies would be out of step.
* A child that dies (segfault, ``os._exit``, the memory limit) fails the call in flight with
  the exit status; the delivery loop records the failure and retries the event. The next call
  starts a new child (and re-opens the plugin with the saved params), but no sooner than an
  exponential backoff after the last crash, so a plugin that crashes at start does not fork
  in a tight loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from alert_server import sandbox
from alert_server.errors import ChildDied, PluginProcessError, ProtocolError
from alert_server.plugin_protocol import (
    PROTOCOL_VERSION,
    decode_all,
    encode,
    error_from_wire,
    read_frame,
)
from alert_server.sandbox import ChildUser
from listener_common import ListenerPlugin
from listener_common.errors import PluginLoadError
from listener_common.events import ListenerEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessSettings:
    """Limits and timings of plugin child processes (from ``listener_core.config.Config``)."""

    #: Address-space limit of a child (RLIMIT_AS), MiB; 0 for none.
    memory_mb: int = 1024
    #: Open-file limit of a child (RLIMIT_NOFILE); 0 to inherit the alert server's.
    max_files: int = 256
    #: Deadline of one call (open, a handler, close), seconds.
    call_timeout: float = 30.0
    #: Deadline of starting a child: interpreter, handshake and loading the package.
    start_timeout: float = 30.0
    #: Restart backoff after a crash: base * 2**(crashes-1), capped.
    restart_base: float = 0.5
    restart_max: float = 30.0
    #: The interpreter children run on: the alert server's own, so the same environment.
    python: str = sys.executable
    #: Confine each child's reads with Landlock (``alert_server.sandbox``), where the kernel
    #: has it; ``read_paths`` are readable besides what running Python needs.
    sandbox: bool = True
    read_paths: tuple[str, ...] = ()
    #: Run children as this user (the alert server must be root or hold CAP_SETUID).
    user: ChildUser | None = None

    def popen_args(self) -> dict[str, Any]:
        """How a child is started besides its command: its environment and user."""
        args: dict[str, Any] = {"env": child_env()}
        if self.user is not None:
            args.update(self.user.popen_args())
        return args


@dataclass(frozen=True)
class ChildSpec:
    """What a child needs to load the package: the host's verified copy of it."""

    plugin_id: str
    sha256: str
    zip_path: str
    prefix: str
    settings: ProcessSettings


def child_command(settings: ProcessSettings) -> list[str]:
    command = [
        settings.python,
        "-P",  # no working directory on sys.path: it may be the data directory
        "-X",
        "faulthandler",  # a segfault prints the plugin's Python stack to the host log
        "-m",
        "alert_server.plugin_child",
        "--memory-mb",
        str(settings.memory_mb),
        "--max-files",
        str(settings.max_files),
    ]
    if settings.sandbox:
        command.append("--sandbox")
        for path in settings.read_paths:
            command += ["--read-path", path]
    return command


def child_env() -> dict[str, str]:
    """Only what running Python needs: never the alert server's secrets (``LISTENER_*``)."""
    return sandbox.child_environment()


def exit_text(returncode: int | None) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _log_stderr(plugin_id: str, pid: int | str, text: str) -> None:
    for line in text.splitlines():
        if line.strip():
            log.info("plugin %s [pid %s]: %s", plugin_id, pid, line)


def inspect_in_child(
    plugin_id: str, sha256: str, zip_path: Path, settings: ProcessSettings
) -> tuple[list[dict[str, Any]], bool]:
    """Loads the package in a one-shot child: its params form and whether it takes batches.

    Blocking (the loader runs off the event loop). Raises PluginLoadError with what the child
    said, or how it died.
    """
    request = encode({"id": 1, "op": "hello", "protocol": PROTOCOL_VERSION}) + encode(
        {"id": 2, "op": "load", "plugin_id": plugin_id, "sha256": sha256, "zip_path": str(zip_path)}
    )
    try:
        done = subprocess.run(
            child_command(settings),
            input=request,
            capture_output=True,
            timeout=settings.start_timeout,
            check=False,
            **settings.popen_args(),
        )
    except subprocess.TimeoutExpired:
        raise PluginLoadError(
            f"the plugin process did not load the package within {settings.start_timeout:g}s"
        ) from None
    except OSError as exc:
        raise PluginLoadError(f"cannot start the plugin process: {exc}") from None
    stderr = done.stderr.decode(errors="replace")
    _log_stderr(plugin_id, "load", stderr)
    try:
        replies = decode_all(done.stdout)
    except ProtocolError as exc:
        raise PluginLoadError(f"the plugin process answered garbage: {exc}") from None
    if len(replies) < 2:
        tail = " | ".join(stderr.strip().splitlines()[-3:])
        raise PluginLoadError(
            f"the plugin process {exit_text(done.returncode)} while loading the package"
            + (f": {tail}" if tail else "")
        )
    for reply in replies[:2]:
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise PluginLoadError(f"{error.get('type')}: {error.get('message')}")
    loaded = replies[1]
    return list(loaded.get("form") or []), bool(loaded.get("batch"))


class _Child:
    """One running child process and its pipes; one request at a time."""

    def __init__(self, spec: ChildSpec, proc: asyncio.subprocess.Process) -> None:
        self.spec = spec
        self.proc = proc
        self._next_id = 0
        self._pump = asyncio.create_task(self._pump_stderr(), name=f"stderr:{proc.pid}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    @classmethod
    async def start(cls, spec: ChildSpec) -> _Child:
        proc = await asyncio.create_subprocess_exec(
            *child_command(spec.settings),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            **spec.settings.popen_args(),
        )
        child = cls(spec, proc)
        timeout = spec.settings.start_timeout
        try:
            hello = await child.request({"op": "hello", "protocol": PROTOCOL_VERSION}, timeout)
            if not hello.get("ok") or hello.get("protocol") != PROTOCOL_VERSION:
                raise PluginProcessError(f"plugin process handshake failed: {hello}")
            loaded = await child.request(
                {
                    "op": "load",
                    "plugin_id": spec.plugin_id,
                    "sha256": spec.sha256,
                    "zip_path": spec.zip_path,
                },
                timeout,
            )
            if not loaded.get("ok"):
                raise error_from_wire(loaded.get("error") or {})
        except BaseException:
            child.kill()
            raise
        log.info("plugin %s: process %d started", spec.plugin_id, proc.pid)
        return child

    async def request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        self._next_id += 1
        message = {**message, "id": self._next_id}
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(encode(message))
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise ChildDied(await self._death()) from None
        async with asyncio.timeout(timeout):
            reply = await read_frame(stdout)
        if reply is None:
            raise ChildDied(await self._death())
        if reply.get("id") != self._next_id:
            self.kill()
            raise ProtocolError(f"reply {reply.get('id')} to request {self._next_id}")
        return reply

    async def _death(self) -> str:
        try:
            async with asyncio.timeout(5):
                await self.proc.wait()
        except TimeoutError:
            self.kill()
            return f"plugin process {self.pid} closed its pipe and was killed"
        return f"plugin process {self.pid} {exit_text(self.proc.returncode)}"

    def kill(self) -> None:
        """SIGKILL, at once and without awaiting: usable while a call is being cancelled."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def stop(self, timeout: float) -> None:
        """Closes stdin (the child exits at its end) and reaps it; kills it if it lingers."""
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
        try:
            async with asyncio.timeout(timeout):
                await self.proc.wait()
        except TimeoutError:
            self.kill()
            await self.proc.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await self._pump

    async def _pump_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        pending = b""
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            pending += chunk
            lines = pending.split(b"\n")
            pending = lines.pop()
            _log_stderr(self.spec.plugin_id, self.pid, b"\n".join(lines).decode(errors="replace"))
        _log_stderr(self.spec.plugin_id, self.pid, pending.decode(errors="replace"))


def _kill_quietly(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


class ProcessPlugin(ListenerPlugin):
    """A plugin object whose real counterpart runs in a child process (see module doc)."""

    spec: ClassVar[ChildSpec]

    def __init__(self) -> None:
        self._child: _Child | None = None
        self._config: dict[str, Any] | None = None
        self._opened = False
        self._crashes = 0
        self._next_start = 0.0
        self._last_exit = ""
        self._lock = asyncio.Lock()

    @property
    def child_pid(self) -> int | None:
        """The running child's pid, if any (for status and tests)."""
        child = self._child
        return child.pid if child is not None and child.alive else None

    async def open(self, config: dict[str, Any]) -> None:
        self._config = dict(config)
        await self._call({"op": "open", "config": self._config})
        self._opened = True

    async def on_event(self, event: ListenerEvent) -> None:
        await self._call({"op": "event", "event": event.to_dict()})

    async def close(self) -> None:
        async with self._lock:
            child, self._child = self._child, None
            self._opened = False
            if child is None:
                return
            try:
                if child.alive:
                    reply = await child.request({"op": "close"}, self.spec.settings.call_timeout)
                    if not reply.get("ok"):
                        raise error_from_wire(reply.get("error") or {})
            except (ChildDied, TimeoutError):
                pass  # nothing left to close
            finally:
                await child.stop(timeout=5)

    async def _ensure(self) -> _Child:
        if self._child is not None and self._child.alive:
            return self._child
        self._child = None
        wait = self._next_start - time.monotonic()
        if wait > 0:
            raise PluginProcessError(
                f"plugin process restarts in {wait:.1f}s (the last one {self._last_exit})"
            )
        try:
            child = await _Child.start(self.spec)
        except Exception as exc:
            self._crashed(f"failed to start: {exc}")
            raise
        if self._opened:  # a restart: the new child needs the instance's params too
            try:
                reply = await child.request(
                    {"op": "open", "config": self._config}, self.spec.settings.call_timeout
                )
                if not reply.get("ok"):
                    raise error_from_wire(reply.get("error") or {})
            except BaseException as exc:
                child.kill()
                self._crashed(f"failed to reopen: {exc}")
                raise
        self._child = child
        weakref.finalize(self, _kill_quietly, child.proc)
        return child

    async def _call(self, message: dict[str, Any]) -> None:
        async with self._lock:
            child = await self._ensure()
            try:
                reply = await child.request(message, self.spec.settings.call_timeout)
            except TimeoutError:
                child.kill()
                self._child = None
                self._crashed("was killed: a call overran its deadline")
                raise TimeoutError(
                    f"plugin call timed out after {self.spec.settings.call_timeout:g}s; "
                    "its process was killed"
                ) from None
            except ChildDied as exc:
                self._child = None
                self._crashed(str(exc).removeprefix(f"plugin process {child.pid} "))
                raise
            except BaseException:  # cancelled: the delivery loop's deadline or a stop
                child.kill()
                self._child = None
                self._crashed("was killed: its call was cancelled")
                raise
        if not reply.get("ok"):
            raise error_from_wire(reply.get("error") or {})
        self._crashes = 0

    def _crashed(self, how: str) -> None:
        self._crashes += 1
        settings = self.spec.settings
        delay = min(settings.restart_max, settings.restart_base * 2 ** (self._crashes - 1))
        self._next_start = time.monotonic() + delay
        self._last_exit = how
        log.warning("plugin %s: process %s; next start in %.1fs", self.spec.plugin_id, how, delay)


class BatchProcessPlugin(ProcessPlugin):
    """The proxy of a plugin that defines ``on_events``: batches cross in one frame."""

    async def on_events(self, batch: list[ListenerEvent]) -> None:
        await self._call({"op": "events", "events": [e.to_dict() for e in batch]})


def proxy_class(spec: ChildSpec, batch: bool) -> type[ListenerPlugin]:
    """A proxy class for one loaded package (each package version gets its own)."""
    base = BatchProcessPlugin if batch else ProcessPlugin
    name = f"{base.__name__}_{spec.prefix.rpartition('.')[2]}"
    return type(name, (base,), {"spec": spec, "__module__": __name__, "__qualname__": name})
