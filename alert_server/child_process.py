"""A plugin child process seen from the alert server: how it is started (``ProcessSettings``,
``child_command``, a scrubbed environment), the handshake and package load, one request at a
time over the framed pipe (``alert_server.plugin_protocol``), and its stderr in the log.

The proxy that turns plugin calls into requests, restarts a crashed child and enforces call
deadlines is ``alert_server.process_plugin``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass
from typing import Any

from alert_server import sandbox
from alert_server.errors import ChildDied, PluginProcessError, ProtocolError
from alert_server.plugin_protocol import PROTOCOL_VERSION, encode, error_from_wire, read_frame
from alert_server.sandbox import ChildUser

# The children's stderr and lifecycle lines under the process proxy's logger, as operators
# filter them.
log = logging.getLogger("alert_server.process_plugin")


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


def log_stderr(plugin_id: str, pid: int | str, text: str) -> None:
    for line in text.splitlines():
        if line.strip():
            log.info("plugin %s [pid %s]: %s", plugin_id, pid, line)


class Child:
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
    async def start(cls, spec: ChildSpec) -> Child:
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
            log_stderr(self.spec.plugin_id, self.pid, b"\n".join(lines).decode(errors="replace"))
        log_stderr(self.spec.plugin_id, self.pid, pending.decode(errors="replace"))
