"""``api_workers = N``: N API server processes sharing ``api_addr`` through SO_REUSEPORT.

The kernel spreads incoming connections over the processes' listening sockets, so a host's
cores all serve the API; each process has its own event loop, store connections and group
commit (its publishes share commits with each other, not with the other processes'). The
first process (the one started) forks the others once its configuration is loaded and its
start-up heap frozen (so they share those pages copy-on-write), before it has a thread, a
gRPC object or a connection; only it serves ``http_addr`` and ``api_metrics_addr``.

It also supervises them: SIGTERM or SIGINT to it reaches every worker, each drains and stops
as one API server would; a worker that dies on its own stops the others too (exit status 1),
so the service manager restarts the whole set rather than leaving it short of a process.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Callable

from listener_core.config import Config

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def worker_config(config: Config) -> Config:
    """What a forked worker serves: the gRPC API only (the HTTP gateway, console and metrics
    endpoint are the first process's; their ports cannot be shared)."""
    listen = dataclasses.replace(config.listen, http_addr="off", api_metrics_addr="")
    return dataclasses.replace(config, listen=listen)


def _die_with_parent() -> None:
    """A worker gets SIGTERM if the first process dies without stopping it (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def run(config: Config, serve: Callable[[Config], None]) -> int:
    """Forks ``api_workers - 1`` workers, serves in this process, and returns the exit status
    once every worker has stopped. ``serve`` runs one API server until SIGTERM/SIGINT."""
    children: list[int] = []
    for _ in range(config.listen.api_workers - 1):
        pid = os.fork()
        if pid == 0:  # the worker: serve, then leave without the parent's exit handlers
            status = 0
            try:
                _die_with_parent()
                serve(worker_config(config))
            except BaseException:
                log.exception("API worker %d failed", os.getpid())
                status = 1
            finally:
                logging.shutdown()
                os._exit(status)
        children.append(pid)
    log.info("API server: %d processes on %s", len(children) + 1, config.listen.api_addr)
    stopping, failed = threading.Event(), threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(children, stopping, failed), name="api-workers", daemon=True
    )
    watcher.start()
    try:
        serve(config)
    finally:
        stopping.set()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        watcher.join()
    return 1 if failed.is_set() else 0


def _watch(children: list[int], stopping: threading.Event, failed: threading.Event) -> None:
    """Reaps the workers. One that exits while the set is serving stops the whole set: this
    process gets SIGTERM, stops as usual and forwards it to the rest."""
    fds = {os.pidfd_open(pid): pid for pid in children}
    try:
        while fds:
            ready, _, _ = select.select(list(fds), [], [])
            for fd in ready:
                pid = fds.pop(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                if stopping.is_set():
                    continue
                print(f"api_server: worker {pid} exited ({code}); stopping", file=sys.stderr)
                if not failed.is_set():
                    failed.set()
                    os.kill(os.getpid(), signal.SIGTERM)
    finally:
        for fd in fds:
            os.close(fd)
