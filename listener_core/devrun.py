"""``make run``: both servers on the default SQLite store, as two child processes.

Stops both on Ctrl-C or SIGTERM; if either exits, stops the other and exits with its code.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from listener.v1 import plugin_pb2, plugin_pb2_grpc
from listener_core.config import Config, load_config


def installed_packages(addr: str, api: subprocess.Popen[bytes]) -> dict[str, list[str]] | None:
    """sha256 -> the plugins installed from that package, asked of the API server once it
    serves; None when it cannot say (it did not come up, or it wants a token)."""
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(addr) as channel:
        stub = plugin_pb2_grpc.PluginServiceStub(channel)
        while time.monotonic() < deadline and api.poll() is None:
            try:
                reply = stub.ListPlugins(plugin_pb2.ListPluginsRequest(page_size=1000), timeout=2)
                found: dict[str, list[str]] = {}
                for p in reply.plugins:
                    found.setdefault(p.sha256, []).append(p.name)
                return found
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    return None
            time.sleep(0.2)
    return None


def banner(config: Config, api: subprocess.Popen[bytes]) -> str:
    """Where the servers are, and which built packages are installed or ready to install:
    after a restart on the same store, the logger is no longer "ready to install"."""
    installed = installed_packages(config.listen.api_addr, api)
    ready: list[str] = []
    done: list[str] = []
    for path in sorted(Path("dist/plugins").glob("*.zip")):
        names = (installed or {}).get(hashlib.sha256(path.read_bytes()).hexdigest())
        if names:
            done.append(f"{path} (as {', '.join(names)})")
        else:
            ready.append(str(path))
    lines = [
        f"\nAPI server on {config.listen.api_addr}, alert server on {config.listen.alert_addr}, "
        f"store {config.store.database_url}",
        _console(config.listen.http_addr),
        f"plugin packages ready to install: {', '.join(ready) or 'none'}",
    ]
    if done:
        lines.append(f"already installed: {', '.join(done)}")
    lines.append(
        "See README.md for the walk-throughs (listenerctl is .venv/bin/listenerctl). "
        "Ctrl-C stops both.\n"
    )
    return "\n".join(lines)


def _console(http_addr: str) -> str:
    if http_addr.strip().lower() in ("", "off"):
        return "HTTP/JSON and the web console are off (http_addr = off)"
    host, _, port = http_addr.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0", "[::]") else host
    return f"web console: http://{host}:{port}/  (HTTP/JSON API under /v1/, /openapi.json)"


def main() -> int:
    config = load_config(os.environ.get("LISTENER_CONFIG") or None)
    env = dict(os.environ)
    alert = subprocess.Popen([sys.executable, "-m", "alert_server"], env=env)
    api = subprocess.Popen([sys.executable, "-m", "api_server"], env=env)
    children = [alert, api]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(banner(config, api), flush=True)
    code = 0
    while not stopping:
        for child in children:
            if child.poll() is not None:
                code = child.returncode or 0
                stopping = True
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
    return code


if __name__ == "__main__":
    sys.exit(main())
