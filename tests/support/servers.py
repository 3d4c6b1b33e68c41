"""Real servers for tests: in-process (``running_pair``) or as subprocesses (``ServerPair``)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography.fernet import Fernet
from grpc_health.v1 import health_pb2, health_pb2_grpc

from alert_server import app as alert_app
from api_server import app as api_app
from listener.v1 import (
    event_service_pb2_grpc,
    listener_instance_pb2,
    listener_instance_pb2_grpc,
    plugin_pb2_grpc,
)
from listener_core.config import Config
from listener_core.tracing import Tracing

REPO = Path(__file__).resolve().parents[2]

FAST = {"poll_interval": 0.5, "retry_base": 0.2, "retry_max": 2.0, "handler_timeout": 10.0}


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range: a port from ``bind(0)`` comes from
    that range, where the kernel also picks the local ports of outgoing connections (to
    PostgreSQL, brokers, another suite's servers), so one could take it before the server
    binds it ("Address already in use", seen once in two concurrent fresh-clone runs)."""
    high = _ephemeral_low() - 1
    while True:
        port = random.randint(20000, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@dataclass
class Clients:
    channel: grpc.aio.Channel

    @property
    def plugins(self) -> plugin_pb2_grpc.PluginServiceStub:
        return plugin_pb2_grpc.PluginServiceStub(self.channel)

    @property
    def instances(self) -> listener_instance_pb2_grpc.ListenerInstanceServiceStub:
        return listener_instance_pb2_grpc.ListenerInstanceServiceStub(self.channel)

    @property
    def events(self) -> event_service_pb2_grpc.EventServiceStub:
        return event_service_pb2_grpc.EventServiceStub(self.channel)


@dataclass
class Pair:
    api: api_app.ApiServer
    alert: alert_app.AlertServer
    clients: Clients
    api_addr: str
    alert_addr: str


@asynccontextmanager
async def running_pair(
    db_url: str,
    data_dir: Path,
    *,
    api_tracing: Tracing | None = None,
    alert_tracing: Tracing | None = None,
    **settings: Any,
) -> AsyncIterator[Pair]:
    """Both servers in this process, on free ports, against ``db_url``. They share one
    secret key, as every server of a deployment must. ``api_tracing`` and ``alert_tracing``
    trace them (spans to a test's exporter); the servers shut them down when they stop."""
    api_addr = settings.pop("api_addr", "127.0.0.1:0")  # a chosen port, or any free one
    base = {
        **FAST,
        "secret_key": Fernet.generate_key().decode(),
        "http_addr": "127.0.0.1:0",
        **settings,
    }
    alert_cfg = Config.from_keys(
        db_url=db_url, data_dir=str(data_dir / "alert"), alert_addr="127.0.0.1:0", **base
    )
    alert = await alert_app.start(alert_cfg, alert_tracing)
    alert_addr = f"127.0.0.1:{alert.port}"
    api_cfg = Config.from_keys(
        db_url=db_url,
        data_dir=str(data_dir / "api"),
        api_addr=api_addr,
        alert_targets=(alert_addr,),
        **base,
    )
    api = await api_app.start(api_cfg, api_tracing)
    api_addr = f"127.0.0.1:{api.port}"
    channel = grpc.aio.insecure_channel(api_addr)
    try:
        yield Pair(api, alert, Clients(channel), api_addr, alert_addr)
    finally:
        await channel.close()
        await api.stop(0)
        await alert.stop(0)


def wait_serving(
    addr: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server for {addr} exited with {proc.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on {addr} not serving after {timeout}s")
            time.sleep(0.1)


@dataclass
class ServerPair:
    """Both servers as subprocesses (``python -m …``), as an operator runs them."""

    db_url: str
    data_dir: Path
    api_addr: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    alert_addr: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    http_addr: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    extra_env: dict[str, str] = field(default_factory=dict)
    secret_key: str = field(default_factory=lambda: Fernet.generate_key().decode())
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "LISTENER_DB_URL": self.db_url,
                "LISTENER_DATA_DIR": str(self.data_dir),
                "LISTENER_API_ADDR": self.api_addr,
                "LISTENER_ALERT_ADDR": self.alert_addr,
                "LISTENER_HTTP_ADDR": self.http_addr,
                "LISTENER_POLL_INTERVAL": str(FAST["poll_interval"]),
                "LISTENER_RETRY_BASE": str(FAST["retry_base"]),
                "LISTENER_RETRY_MAX": str(FAST["retry_max"]),
                "PYTHONUNBUFFERED": "1",
                "LISTENER_SECRET_KEY": self.secret_key,
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, which: str) -> None:
        addr = self.api_addr if which == "api_server" else self.alert_addr
        self.spawn(which, which, addr)

    def spawn(self, name: str, module: str, addr: str, **env: str) -> None:
        """Starts ``python -m module`` as ``name`` and waits until ``addr`` serves."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=REPO,
            env={**self.env(), **env},
            stdout=log,
            stderr=log,
        )
        self.procs[name] = proc
        which = name
        try:
            wait_serving(addr, proc=proc)
        except Exception:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{which} did not start; log:\n{self.log(which)}") from None

    def log(self, which: str) -> str:
        path = self.data_dir / f"{which}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_both(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.start("alert_server")
        self.start("api_server")

    def kill(self, which: str) -> None:
        proc = self.procs.pop(which)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> dict[str, int]:
        """SIGTERM to each server; returns their exit codes (0 after a graceful stop)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        codes = {name: proc.wait() for name, proc in self.procs.items()}
        self.procs.clear()
        return codes


async def eventually(check: Any, timeout: float = 60.0, interval: float = 0.05) -> Any:
    """Polls ``check`` (sync or async) until it returns a truthy value; returns it. The
    deadline is generous: it costs nothing when the condition holds, and the suite runs
    on two cores shared with other runs."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


async def recorded(
    clients: Clients, instance_id: str, sequence: int, timeout: float = 60.0
) -> listener_instance_pb2.ListenerInstance:
    """Waits until the store records the instance's cursor at ``sequence`` or beyond.

    A plugin's output (its file, a broker message) shows the handler ran, not that the
    cursor moved: the progress writer records it a moment later, in the background. Tests
    whose next step depends on the cursor (purge, pending counts, attempts cleared, replay,
    a restart) wait for this, never for the plugin's output alone."""

    async def reached() -> listener_instance_pb2.ListenerInstance | None:
        got = await clients.instances.GetListenerInstance(
            listener_instance_pb2.GetListenerInstanceRequest(
                name=f"listenerInstances/{instance_id}"
            )
        )
        return got if got.delivery.delivered_sequence >= sequence else None

    return await eventually(reached, timeout=timeout)  # type: ignore[no-any-return]
