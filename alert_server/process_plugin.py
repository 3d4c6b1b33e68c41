"""The host side of process isolation: a ``ListenerPlugin`` proxy per plugin object, each
driving a child process (``alert_server.plugin_child``) that runs the real plugin.

Delivery loops and the plugin host treat a process-isolated package like any other: the
loader returns a ``LoadedPackage`` whose ``plugin_class`` is a class generated here, so
``plugin_class()``, ``open``, ``on_event``/``on_events`` and ``close`` work unchanged. Behind
them:

* ``open`` starts a child, checks the protocol version (handshake), has it load the package
  from the host's verified cache file, and opens the real plugin object with the instance's
  params. The child's stderr goes to the log, line by line (``alert_server.child_process``).
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
import subprocess
import time
import weakref
from pathlib import Path
from typing import Any, ClassVar

from alert_server.child_process import (
    Child,
    ChildSpec,
    ProcessSettings,
    child_command,
    exit_text,
    log_stderr,
)
from alert_server.errors import ChildDied, PluginProcessError, ProtocolError
from alert_server.plugin_protocol import (
    PROTOCOL_VERSION,
    decode_all,
    encode,
    error_from_wire,
)
from listener_common import ListenerPlugin
from listener_common.errors import PluginLoadError
from listener_common.events import ListenerEvent

log = logging.getLogger(__name__)


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
    log_stderr(plugin_id, "load", stderr)
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


def _kill_quietly(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


class ProcessPlugin(ListenerPlugin):
    """A plugin object whose real counterpart runs in a child process (see module doc)."""

    spec: ClassVar[ChildSpec]

    def __init__(self) -> None:
        self._child: Child | None = None
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

    async def _ensure(self) -> Child:
        if self._child is not None and self._child.alive:
            return self._child
        self._child = None
        wait = self._next_start - time.monotonic()
        if wait > 0:
            raise PluginProcessError(
                f"plugin process restarts in {wait:.1f}s (the last one {self._last_exit})"
            )
        try:
            child = await Child.start(self.spec)
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
